"""Loudness in dB on the Echo Nest scale, and fades.

Definition used throughout: the level of a frame is its K-weighted RMS
(ITU-R BS.1770: a high shelf of about +4 dB above 2 kHz and a high-pass below
about 100 Hz, applied as a gain on the shared STFT's power spectrum) in dB
relative to a full-scale 997 Hz sine, floored at -60 dB as in the Echo Nest
documents.  A sine peaking at -20 dBFS reads -20.0 dB at 997 Hz (-20.1 at
440 Hz).  The track's `loudness` is the energy mean of 400 ms blocks, gated as
in BS.1770 (absolute gate -70 dB, relative gate 10 dB below the ungated
mean): it equals integrated loudness in LUFS + 3.01 dB, and a modern master
reads about -4 to -10 dB, as in the real documents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_DB = -60.0
_SINE_RMS_DB = 20 * np.log10(np.sqrt(0.5))  # a full-scale sine's RMS in dBFS


@dataclass(frozen=True)
class FadeParams:
    smooth_s: float = 1.0
    # a fade ends/starts where the smoothed level comes within this many dB of the track's body
    threshold_below_body_db: float = 12.0
    # level rises/falls no more than this between envelope steps before we stop walking
    monotone_tolerance_db: float = 0.5


@dataclass(frozen=True)
class Fades:
    end_of_fade_in: float
    start_of_fade_out: float


# ITU-R BS.1770-4 K-weighting at 48 kHz: stage 1 (head-related high shelf), stage 2 (RLB high-pass)
_K_SHELF = ([1.53512485958697, -2.69169618940638, 1.19839281085285], [1.0, -1.69065929318241, 0.73248077421585])
_K_HIGHPASS = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])
_K_REFERENCE_HZ = 997.0


def k_weighting_power_gain(freqs_hz: np.ndarray) -> np.ndarray:
    """Power gain of the K-weighting filter at each frequency, 1.0 at 997 Hz.

    The filters are defined at 48 kHz; their response below 11 kHz (all a
    22050 Hz analysis sees) is evaluated there directly, which is what
    resampling the filter would approximate.
    """
    from scipy.signal import freqz

    f = np.append(np.asarray(freqs_hz, dtype=np.float64), _K_REFERENCE_HZ)
    g = np.ones_like(f)
    for b, a in (_K_SHELF, _K_HIGHPASS):
        _, h = freqz(b, a, worN=f, fs=48000.0)
        g *= np.abs(h) ** 2
    return g[:-1] / g[-1]


def frame_rms_from_power(stft_power: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    """K-weighted frame RMS (full scale 1.0) from a Hann-window power spectrogram (Parseval)."""
    p = np.asarray(stft_power, dtype=np.float64)
    p = p * k_weighting_power_gain(np.arange(p.shape[0]) * sr / n_fft)[:, None]
    # librosa's Hann window: sum(w^2) = 3/8 n_fft; one-sided spectrum counts inner bins twice
    energy = (2.0 * p[1:-1].sum(axis=0) + p[0] + p[-1]) / (n_fft * n_fft * 0.375)
    return np.sqrt(np.maximum(energy, 0.0))


def rms_to_db(rms: np.ndarray) -> np.ndarray:
    """Frame RMS (linear, full scale 1.0) -> dB re a full-scale sine, floored at -60."""
    db = 20.0 * np.log10(np.maximum(np.asarray(rms, dtype=np.float64), 1e-12)) - _SINE_RMS_DB
    return np.maximum(db, FLOOR_DB)


def power_mean_db(db: np.ndarray) -> float:
    if db.size == 0:
        return FLOOR_DB
    return float(max(10.0 * np.log10(np.mean(10.0 ** (db / 10.0))), FLOOR_DB))


def integrated_loudness(*, frame_rms: np.ndarray, fps: float) -> float:
    """Gated energy mean (BS.1770 gating) of 400 ms blocks with 75% overlap, from (K-weighted) frame RMS."""
    power = np.asarray(frame_rms, dtype=np.float64) ** 2
    block = max(1, int(round(0.4 * fps)))
    step = max(1, block // 4)
    if len(power) < block:
        blocks = np.array([power.mean()]) if len(power) else np.zeros(0)
    else:
        c = np.concatenate(([0.0], np.cumsum(power)))
        starts = np.arange(0, len(power) - block + 1, step)
        blocks = (c[starts + block] - c[starts]) / block
    if blocks.size == 0:
        return FLOOR_DB
    blocks_db = 10 * np.log10(np.maximum(blocks, 1e-12)) - _SINE_RMS_DB
    gated = blocks_db[blocks_db > -70.0]
    if gated.size == 0:
        return FLOOR_DB
    rel = power_mean_db(gated) - 10.0
    gated = gated[gated > rel]
    return power_mean_db(gated)


def detect_fades(*, frame_db: np.ndarray, fps: float, duration_s: float, params: FadeParams) -> Fades:
    """Where the fade-in ends and the fade-out starts (0 and the duration where there is none)."""
    n = len(frame_db)
    if n == 0:
        return Fades(0.0, duration_s)
    win = max(1, int(round(params.smooth_s * fps)))
    power = 10.0 ** (np.asarray(frame_db, dtype=np.float64) / 10.0)
    kernel = np.ones(win) / win
    env = 10 * np.log10(np.maximum(np.convolve(power, kernel, mode="same"), 1e-12))
    loud = env > FLOOR_DB + 1
    if not loud.any():
        return Fades(0.0, duration_s)
    body = float(np.median(env[loud]))
    thr = body - params.threshold_below_body_db
    above = np.flatnonzero(env >= thr)
    if above.size == 0:
        return Fades(0.0, duration_s)

    # fade-in: from the first frame at body level, walk forward while still rising
    i = int(above[0])
    while i + 1 < n and env[i + 1] > env[i] + params.monotone_tolerance_db / win and env[i] < body - 1.0:
        i += 1
    # fade-out: from the last frame at body level, walk back while the level still rises backwards
    j = int(above[-1])
    while j - 1 > i and env[j - 1] > env[j] + params.monotone_tolerance_db / win and env[j] < body - 1.0:
        j -= 1
    fade_in_end = i / fps if (i > 0) else 0.0
    # the smoothing window centres each value; the audible start of a fade is half a window earlier
    fade_out_start = j / fps
    if fade_out_start >= duration_s - 0.5 * params.smooth_s or j >= n - 1:
        fade_out_start = duration_s
    if fade_in_end <= 0.5 * params.smooth_s and not (env[0] < thr):
        fade_in_end = 0.0
    return Fades(float(min(fade_in_end, duration_s)), float(max(min(fade_out_start, duration_s), fade_in_end)))
