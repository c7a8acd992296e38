"""The 12-d segment timbre: patches, the stored basis, and what its dimensions mean."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from analyzer.stages.auditory import auditory_spectrogram
from analyzer.errors import ParameterError
from analyzer.stages.timbre import (TimbreBasis, TimbreParams, defined_directions, load_basis, save_basis, segment_patches,
                             timbre_vectors)
from fixtures import synth

SR = 22050
PARAMS = TimbreParams()


def _bands(x: np.ndarray):
    return auditory_spectrogram(np.asarray(x, dtype=np.float32), SR)


def _vector_at(x: np.ndarray, onset_sample: int, end_sample: int | None = None) -> np.ndarray:
    """Timbre of the one segment that starts at ``onset_sample`` and runs to ``end_sample`` (or the end)."""
    aud = _bands(x)
    start = int(round(onset_sample * aud.fps / SR))
    end = aud.n_frames if end_sample is None else int(round(end_sample * aud.fps / SR))
    patch = segment_patches(bands_db=aud.bands_db, start_frames=np.array([start]), end_frames=np.array([end]),
                            params=PARAMS)
    return timbre_vectors(patch, load_basis())[0]


def _noise(seed: int, n: int, *, cutoff_hz: float, highpass: bool) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec[(f < cutoff_hz) if highpass else (f > cutoff_hz)] = 0.0
    x = np.fft.irfft(spec, n)
    return 0.3 * x / np.max(np.abs(x))


def _saw(freq_hz: float, n: int) -> np.ndarray:
    return 2.0 * ((freq_hz * np.arange(n) / SR) % 1.0) - 1.0


def test_patch_is_the_whole_segment_resampled_and_never_reads_the_next_one():
    n_total = 40
    bands = np.full((PARAMS.n_bands, n_total), -40.0, dtype=np.float32)
    bands[:, 10:] = 0.0  # the second segment, from frame 10, is much louder
    bands[:, :5] = -50.0  # the first segment's first half is quieter than its second
    p = segment_patches(bands_db=bands, start_frames=np.array([0, 10, 38]), end_frames=np.array([10, 38, 40]),
                        params=PARAMS)
    assert p.shape == (3, PARAMS.n_bands * PARAMS.n_frames)
    first = p[0].reshape(PARAMS.n_bands, PARAMS.n_frames)
    # 10 frames stretched over 16 parts: the first half reads the quiet frames, the second the rest
    np.testing.assert_allclose(first[:, : PARAMS.n_frames // 2 - 1], 10.0)
    np.testing.assert_allclose(first[:, PARAMS.n_frames // 2 + 1 :], 20.0)
    assert first.max() < p[1].min()  # never the next segment's level
    np.testing.assert_allclose(p[1], 60.0)  # dB above the -60 floor
    np.testing.assert_allclose(p[2], 60.0)  # a 2-frame segment repeats its frames
    assert (p >= 0).all()


def test_patch_rejects_mismatched_bounds_and_wrong_band_counts():
    bands = np.zeros((PARAMS.n_bands, 10), dtype=np.float32)
    with pytest.raises(ParameterError):
        segment_patches(bands_db=bands, start_frames=np.array([0, 4]), end_frames=np.array([10]), params=PARAMS)
    with pytest.raises(ParameterError, match="bands"):
        segment_patches(bands_db=np.zeros((128, 10)), start_frames=np.array([0]), end_frames=np.array([10]),
                        params=PARAMS)


def test_level_dimension_follows_the_level():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(2 * SR)
    noise *= 0.5 / np.abs(noise).max()
    v = {db: _vector_at(noise * 10 ** (db / 20), SR // 4, 7 * SR // 4) for db in (0.0, -14.0)}
    # broadband noise keeps every band above the floor: the mean level moves by the level change
    assert v[0.0][0] - v[-14.0][0] == pytest.approx(14.0, abs=0.3)
    assert 30.0 < v[0.0][0] < 62.0
    # dims 2-12 describe the shape, not the level: a level change leaves them nearly still
    assert np.abs(v[0.0][1:] - v[-14.0][1:]).max() < 0.05 * np.abs(v[0.0][1:]).max() + 1.0
    silence = _vector_at(np.zeros(SR), 0)
    assert silence[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "bright, dark",
    [
        (_noise(1, SR, cutoff_hz=4000.0, highpass=True), _noise(2, SR, cutoff_hz=500.0, highpass=False)),
        (0.5 * _saw(220.0, SR), 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(SR) / SR)),
    ],
    ids=["noise", "saw-vs-sine"],
)
def test_brightness_dimension(bright, dark):
    assert _vector_at(bright, 0)[1] > _vector_at(dark, 0)[1] + 10.0


def test_attack_dimension_plucked_above_swelling():
    n = SR
    lead = SR // 4
    t = np.arange(n) / SR
    tone = 0.5 * _saw(220.0, n)
    plucked = np.concatenate([np.zeros(lead), tone * np.exp(-t / 0.05)])
    swelling = np.concatenate([np.zeros(lead), tone * np.minimum(t / 0.4, 1.0) ** 2])
    assert _vector_at(plucked, lead)[3] > _vector_at(swelling, lead)[3] + 10.0


def test_flatness_dimension_noise_above_a_pure_tone():
    rng = np.random.default_rng(5)
    noise = 0.3 * rng.standard_normal(SR)
    tone = 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(SR) / SR)
    assert _vector_at(noise, 0)[2] > _vector_at(tone, 0)[2] + 10.0


def test_defined_directions_keep_their_shapes():
    d = defined_directions(PARAMS).reshape(3, PARAMS.n_bands, PARAMS.n_frames)
    bright, flat, attack = d
    # brightness rises across the bands; flatness peaks in the middle bands; attack falls over time
    assert bright[-1].mean() > 0 > bright[0].mean()
    mid = PARAMS.n_bands // 2
    assert flat[mid].mean() > max(flat[0].mean(), flat[-1].mean())
    assert attack[:, 0].mean() > 0 > attack[:, -1].mean()


def test_stored_basis_is_orthonormal_and_level_free():
    b = load_basis()
    assert b.components.shape == (11, PARAMS.n_bands * PARAMS.n_frames)
    np.testing.assert_allclose(b.components @ b.components.T, np.eye(11), atol=1e-5)
    # a level change alone (a constant added to the patch) moves only dimension 1
    np.testing.assert_allclose(b.components.sum(axis=1), 0.0, atol=1e-4)
    assert load_basis() is b


def test_loader_refuses_a_wrong_shape(tmp_path):
    wrong = TimbreBasis(components=np.zeros((11, 10)), mean_patch=np.zeros(10), params=PARAMS)
    path = tmp_path / "wrong.npz"
    save_basis(path, wrong)
    with pytest.raises(ParameterError, match="shape"):
        load_basis(path)


def test_loader_refuses_other_params(tmp_path):
    path = tmp_path / "other.npz"
    save_basis(path, load_basis())
    with pytest.raises(ParameterError, match="floor_db"):
        load_basis(path, params=TimbreParams(floor_db=-70.0))


def _render_notes(program: int, pitches: list[int]) -> tuple[np.ndarray, list[int]]:
    beat_s = 0.5  # 120 bpm
    notes = [(1.0 + 2.0 * i, 1.5, p, 90, 0) for i, p in enumerate(pitches)]
    with tempfile.TemporaryDirectory() as tmp:
        mid = synth.write_midi(Path(tmp) / "notes.mid", notes=notes, programs={0: program},
                               tempo_map=[(0.0, 120.0)], end_beat=2.0 * len(pitches) + 2.0)
        x = synth.render_midi(mid, sr=SR).mean(axis=1)
    return x, [int(round(n[0] * beat_s * SR)) for n in notes]


def test_same_instrument_closer_than_different_instruments():
    if shutil.which("fluidsynth") is None or not synth.SOUNDFONT.is_file():
        pytest.skip("needs the fluidsynth binary and the FluidR3_GM soundfont")
    pytest.importorskip("mido", reason="needs mido to write MIDI")
    pitches = [57, 60, 64, 67, 72]
    groups = []
    for program in (0, 73):  # acoustic grand piano, flute
        x, onsets = _render_notes(program, pitches)
        aud = _bands(x)
        starts = np.array([int(round(s * aud.fps / SR)) for s in onsets])
        ends = np.append(starts[1:], aud.n_frames)
        groups.append(timbre_vectors(segment_patches(bands_db=aud.bands_db, start_frames=starts, end_frames=ends,
                                                     params=PARAMS), load_basis())[:, 1:])
    a, b = groups
    within = [np.linalg.norm(g[i] - g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    between = [np.linalg.norm(u - v) for u in a for v in b]
    assert np.mean(within) < np.mean(between)


def test_fitting_script_regenerates_the_stored_basis(tmp_path):
    if shutil.which("fluidsynth") is None or not Path(synth.SOUNDFONT).is_file():
        pytest.skip("needs the fluidsynth binary and the FluidR3_GM soundfont")
    from fixtures import fit_timbre

    out = tmp_path / "basis.npz"
    assert fit_timbre.main([str(out)]) == 0
    fresh, stored = load_basis(out), load_basis()
    # BLAS, FFT and FluidSynth differ in the last bits between machines (4e-8 seen); a real change
    # to the corpus or the fit moves these by whole units
    np.testing.assert_allclose(fresh.components, stored.components, atol=1e-4)
    np.testing.assert_allclose(fresh.mean_patch, stored.mean_patch, atol=1e-3)
