"""Loudness in dB on the Echo Nest scale, and fades.

Definition used throughout: the level of a frame is its RMS in dB relative to
a full-scale sine (so a sine peaking at -20 dBFS reads -20.0 dB), floored at
-60 dB as in the Echo Nest documents.  The track's `loudness` is the
energy mean of 400 ms blocks, gated as in ITU-R BS.1770 (absolute gate
-70 dB, relative gate 10 dB below the ungated mean) but without the K-weighting
filter: a modern master reads about -4 to -10 dB, as in the real documents.
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


def rms_to_db(rms: np.ndarray) -> np.ndarray:
    """Frame RMS (linear, full scale 1.0) -> dB re a full-scale sine, floored at -60."""
    db = 20.0 * np.log10(np.maximum(np.asarray(rms, dtype=np.float64), 1e-12)) - _SINE_RMS_DB
    return np.maximum(db, FLOOR_DB)


def power_mean_db(db: np.ndarray) -> float:
    if db.size == 0:
        return FLOOR_DB
    return float(max(10.0 * np.log10(np.mean(10.0 ** (db / 10.0))), FLOOR_DB))


def integrated_loudness(*, frame_rms: np.ndarray, fps: float) -> float:
    """Gated energy mean (BS.1770 gating, no K-weighting) of 400 ms blocks with 75% overlap."""
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
