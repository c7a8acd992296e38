"""The auditory spectrogram: the loudness scale every segment, section and track loudness is read on."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer.stages.auditory import AuditoryParams, auditory_spectrogram, hz_to_bark, terhardt_gain_db

SR = 22050


def _noise(seconds: float, *, seed: int = 0, pink: bool = False, rms: float = np.sqrt(0.5)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = rng.standard_normal(n)
    if pink:
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / SR)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    return x * rms / np.sqrt(np.mean(x**2))


def _steady_level(x: np.ndarray) -> float:
    loud = auditory_spectrogram(x, SR).loudness_db
    return float(np.mean(loud[50:-50]))


def test_reference_pink_noise_at_full_scale_sine_rms():
    # the scale's one constant (AuditoryParams.reference_db): pink noise with a full-scale sine's RMS
    # reads +3.1 dB; the tolerance covers the noise's own randomness (0.1 dB over 10 s)
    assert _steady_level(_noise(10.0, pink=True)) == pytest.approx(3.1, abs=0.3)


def test_broadband_levels_read_decibel_for_decibel():
    x = _noise(6.0, seed=1)
    assert _steady_level(x) - _steady_level(x * 10 ** (-14 / 20)) == pytest.approx(14.0, abs=0.05)


def test_loudness_summation_and_the_ear():
    t = np.arange(4 * SR) / SR
    rms = np.sqrt(0.5) * 0.1
    tone = np.sqrt(2) * rms * np.sin(2 * np.pi * 1000 * t)
    # the same power spread over every critical band is louder than in one (loudness summation)
    assert _steady_level(_noise(4.0, rms=rms)) > _steady_level(tone) + 10.0
    # the outer ear: 3.3 kHz carries more than 100 Hz at the same amplitude
    hi = _steady_level(0.1 * np.sin(2 * np.pi * 3300 * t))
    lo = _steady_level(0.1 * np.sin(2 * np.pi * 100 * t))
    assert hi > lo + 3.0
    assert terhardt_gain_db(np.array([3300.0]))[0] > terhardt_gain_db(np.array([1000.0]))[0] > terhardt_gain_db(
        np.array([100.0]))[0]


def test_bands_frames_and_floor():
    x = np.zeros(SR)
    x[SR // 2 :] = _noise(0.5, seed=2) * 0.3
    aud = auditory_spectrogram(x, SR)
    assert aud.bands_db.shape == (23, 1 + SR // 128)
    assert aud.fps == pytest.approx(SR / 128)
    assert aud.bands_db.dtype == np.float32
    # digital silence sits on the floor; the band edges follow the Bark scale up to Nyquist
    assert aud.loudness_db[: int(0.45 * aud.fps)].max() == pytest.approx(-60.0)
    assert np.allclose(hz_to_bark(aud.band_edges_hz[:-1]), np.arange(23), atol=0.01)
    assert aud.band_edges_hz[-1] == pytest.approx(SR / 2)


def test_forward_masking_holds_the_level_briefly_after_a_sound_stops():
    x = np.zeros(2 * SR)
    x[: SR] = _noise(1.0, seed=3) * 0.3
    loud = auditory_spectrogram(x, SR).loudness_db
    fps = SR / 128
    end = int(1.0 * fps)
    # the level falls over the 30 ms masking window, not at once, and is back at the floor after it
    assert loud[end + 2] > -60.0
    assert loud[end + int(0.05 * fps)] == pytest.approx(-60.0)


def test_blocks_do_not_change_the_result():
    x = _noise(3.0, seed=4) * np.linspace(0.01, 0.5, 3 * SR)
    whole = auditory_spectrogram(x, SR)
    pieces = auditory_spectrogram(x, SR, AuditoryParams(block_frames=37))
    np.testing.assert_allclose(pieces.bands_db, whole.bands_db, atol=1e-3)
