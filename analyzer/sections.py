"""Section boundaries from a checkerboard novelty curve over beat-synchronous features.

Features per beat (chroma and MFCC, each standardised) give a self-similarity
matrix; Foote's Gaussian-tapered checkerboard kernel slid along its diagonal
gives a novelty curve whose peaks are where the music changes for good.
Boundaries are snapped to the nearest bar start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SectionParams:
    kernel_s: float = 12.0  # full checkerboard width
    min_section_s: float = 8.0
    # a peak must stand this many standard deviations above the curve's median
    peak_threshold_sd: float = 1.0
    fallback_step_s: float = 0.5  # feature step where there are no beats


@dataclass(frozen=True)
class Boundaries:
    start: np.ndarray  # s, first is 0.0
    confidence: np.ndarray  # 0..1, first is 1.0 (the track's start is certain)


def beat_sync(features: np.ndarray, frame_times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Mean of each feature row between consecutive grid times -> (dims, len(grid))."""
    idx = np.searchsorted(frame_times, grid)
    idx = np.clip(idx, 0, features.shape[1])
    edges = np.append(idx, features.shape[1])
    c = np.concatenate([np.zeros((features.shape[0], 1)), np.cumsum(features, axis=1)], axis=1)
    lo, hi = edges[:-1], np.maximum(edges[1:], edges[:-1] + 1)
    hi = np.minimum(hi, features.shape[1])
    lo = np.minimum(lo, hi - 1)
    return (c[:, hi] - c[:, lo]) / np.maximum(hi - lo, 1)


def novelty_curve(feats: np.ndarray, kernel_size: int) -> np.ndarray:
    z = (feats - feats.mean(axis=1, keepdims=True)) / (feats.std(axis=1, keepdims=True) + 1e-6)
    z = z / (np.linalg.norm(z, axis=0, keepdims=True) + 1e-9)
    ssm = z.T @ z
    half = max(1, kernel_size // 2)
    ax = np.arange(-half, half) + 0.5
    g = np.exp(-0.5 * (ax / (0.5 * half)) ** 2)
    kern = np.outer(g, g) * np.outer(np.sign(ax), np.sign(ax))
    n = ssm.shape[0]
    pad = np.pad(ssm, half, mode="constant")
    nov = np.zeros(n)
    for i in range(n):
        nov[i] = np.sum(kern * pad[i : i + 2 * half, i : i + 2 * half])
    # edges see half a kernel of padding; the track's own start and end are not novelties
    nov[: min(half, n)] *= np.linspace(0, 1, min(half, n))
    nov[max(n - half, 0) :] *= np.linspace(1, 0, n - max(n - half, 0))
    return np.maximum(nov, 0)


def find_boundaries(
    *,
    chroma: np.ndarray,
    mfcc: np.ndarray,
    fps: float,
    beat_times: np.ndarray,
    bar_times: np.ndarray,
    duration_s: float,
    params: SectionParams,
) -> Boundaries:
    frame_times = np.arange(chroma.shape[1]) / fps
    if len(beat_times) >= 8:
        grid = np.concatenate(([0.0], beat_times[beat_times > 0.05]))
    else:
        grid = np.arange(0.0, duration_s, params.fallback_step_s)
    if len(grid) < 8 or duration_s < 2 * params.min_section_s:
        return Boundaries(np.array([0.0]), np.array([1.0]))
    feats = np.vstack([np.log1p(chroma / (chroma.max() + 1e-9) * 10), mfcc[1:14]])
    sync = beat_sync(feats, frame_times, grid)
    step_s = float(np.median(np.diff(grid)))
    kernel = int(np.clip(round(params.kernel_s / step_s), 4, max(4, len(grid) // 2)))
    nov = novelty_curve(sync, kernel)
    if nov.max() <= 0:
        return Boundaries(np.array([0.0]), np.array([1.0]))
    thr = np.median(nov) + params.peak_threshold_sd * nov.std()
    min_gap = max(1, int(round(params.min_section_s / step_s)))
    cand = [i for i in range(1, len(nov) - 1) if nov[i] >= nov[i - 1] and nov[i] >= nov[i + 1] and nov[i] > thr]
    cand.sort(key=lambda i: -nov[i])
    chosen: list[int] = []
    for i in cand:
        t = grid[i]
        if t < params.min_section_s or duration_s - t < params.min_section_s:
            continue
        if all(abs(i - j) >= min_gap for j in chosen):
            chosen.append(i)
    chosen.sort()
    times, confs = [0.0], [1.0]
    scale = float(np.percentile(nov, 99)) or float(nov.max())
    for i in chosen:
        t = float(grid[i])
        if len(bar_times):
            b = bar_times[np.argmin(np.abs(bar_times - t))]
            if abs(b - t) <= 1.5 * step_s:
                t = float(b)
        if t - times[-1] >= params.min_section_s * 0.5:
            times.append(t)
            confs.append(float(np.clip(nov[i] / scale, 0, 1)))
    return Boundaries(np.array(times), np.array(confs))
