"""Section boundaries and labels from multi-feature, multi-scale checkerboard novelty.

Per beat (the grid on which music changes section), three feature groups are
averaged: timbre (MFCC 1-13), harmony (log-compressed chroma) and level (dB).
Each group gives a cosine self-similarity matrix; Foote's Gaussian-tapered
checkerboard kernel, at a short and a long scale, slid along its diagonal
gives novelty curves, normalised so that a change between two steady,
opposed textures scores 1.  Their mean is peak-picked with an absolute
threshold (a steady loop has no novelty to speak of, so it gets no boundary)
and a minimum section length.  Each boundary is then placed precisely: within
a beat of the chosen one, at the frame where short-range timbre novelty peaks
(joins and cuts fall between beats), then onto a bar start (bands change
section on the downbeat), but only when one is within 0.3 s.

Labels group repeated sections: sections whose mean features are close share
a letter (A, B, A, ...): an extension field Echo Nest consumers ignore.

`describe_sections` then gives each section the rest of its Echo Nest fields:
loudness, tempo, key, mode and time signature, each with its confidence, read
from the track's own rhythm evidence and the key network run on the section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import librosa
import numpy as np

from analyzer.stages.key import Key
from analyzer.stages.loudness import span_loudness
from analyzer.stages.rhythm import Rhythm, RhythmParams, decode_meter, estimate_tempo, meter_bonus, meter_params_for
from analyzer.stages.segments import Segments


@dataclass(frozen=True)
class SectionParams:
    # full checkerboard widths.  8 s: the Echo Nest's granularity (one section per 20-30 s) on its
    # "Fancy" analysis (F@3 s 0.57 -> 0.71 from 12 s) with the medleys and sargon unchanged or better
    # (bench/RESULTS.md); 12 s had been chosen when the level feature was K-weighted power, on which
    # a steady chord loop's changes scored 0.6 harmony novelty at 8 s (tests/test_sections.py keeps
    # the loop free of spurious boundaries)
    kernel_short_s: float = 8.0
    kernel_long_s: float = 24.0
    min_section_s: float = 6.0
    # mean normalised novelty a boundary must reach (1 = between two opposed steady textures)
    min_novelty: float = 0.18
    # and it must stand out from the track's own novelty level
    min_prominence_sd: float = 1.0
    # at most one section per this many seconds on average
    max_density_s: float = 12.0
    # the window on each side of a candidate frame when a boundary is placed within a beat: 2 s
    # (medleys F@0.5 0.80 -> 0.85; 1.5-3 s all gave the same; 0.5 s 0.76)
    refine_kernel_s: float = 2.0
    # local tempo (log2 beat length) moves this much at a tempo-change boundary (0.1 = 7%)
    tempo_scale_octaves: float = 0.1
    min_tempo_novelty: float = 0.5
    # joins and cuts fall anywhere: only a bar start this close wins over the refined frame
    # (0.6 s moved medley joins off by up to 0.6 s: F@0.5 0.84 -> 0.76; sargon unchanged)
    snap_to_bar_s: float = 0.3
    label_similarity: float = 0.8
    # digital silence before the music starts or after it ends: a section of its own where human
    # annotations are the reference (SALAMI's and Nieto's "Silence"), but not in the Echo Nest's documents,
    # whose first section takes the leading silence and last section the trailing one (all four pairs with
    # sections); so off by default.  Silence: below this level, for at least this long
    silence_sections: bool = False
    silence_db: float = -59.0  # (the loudness floor is -60; a hair above it is still silence)
    min_silence_s: float = 0.25
    fallback_step_s: float = 0.5  # feature step where there are no beats
    # fewer beats than this: the grid is the fallback step (a beat tracker's few beats are no grid)
    min_grid_beats: int = 16
    # fewer grid points than this, or a track shorter than two sections: one section
    min_grid_points: int = 8
    # fixed feature scales (not the track's own spread): a steady track stays self-similar instead
    # of having its tiny variations blown up to unit variance.  What a clear change moves each by:
    timbre_scale: float = 20.0  # MFCC 1-13 units
    harmony_scale: float = 0.5  # log-compressed chroma, log1p(harmony_compression x chroma / max)
    level_scale_db: float = 6.0
    harmony_compression: float = 10.0
    # a section shorter than this takes the track's key rather than a noisy one of its own
    min_key_s: float = 6.0
    # a section with fewer beats than this takes the track's meter, with confidence 0
    min_meter_beats: int = 4


@dataclass(frozen=True)
class Section:
    """One Echo Nest section: times in seconds, loudness in dB, tempo in BPM, key as a pitch class."""

    start: float
    duration: float
    confidence: float
    loudness: float
    tempo: float
    tempo_confidence: float
    key: int
    key_confidence: float
    mode: int
    mode_confidence: float
    time_signature: int
    time_signature_confidence: float
    label: str  # repeated sections share a label (A, B, A ...)


@dataclass(frozen=True)
class Boundaries:
    start: np.ndarray  # s, first is 0.0
    confidence: np.ndarray  # 0..1, first is 1.0 (the track's start is certain)
    label: tuple[str, ...]  # one letter group per section: repeated sections share a label


def beat_sync(features: np.ndarray, frame_times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Mean of each feature row between consecutive grid times -> (dims, len(grid)).

    Every grid point gets a column: one between two frames, or past the last frame, gets
    the frame at or before it (``librosa.util.sync`` on explicit slices, which keeps them).
    """
    n = features.shape[1]
    lo = np.clip(np.searchsorted(frame_times, grid), 0, n)
    hi = np.minimum(np.maximum(np.append(lo[1:], n), lo + 1), n)
    lo = np.minimum(lo, hi - 1)
    return librosa.util.sync(features, [slice(a, b) for a, b in zip(lo, hi)], aggregate=np.mean)


def checkerboard_novelty(features: np.ndarray, half: int) -> np.ndarray:
    """Foote novelty of the self-similarity ``features.T @ features``: 1 for a clean change.

    ``features`` is (dims, n); the similarity of points i and j is the dot
    product of their columns.  Only the blocks around the diagonal the kernel
    reads are formed (n x 2half x 2half), never the n x n matrix: a one-hour
    file has ~5,600 beats, whose similarity matrices took 0.25 GB each.
    """
    u = np.atleast_2d(np.asarray(features, dtype=np.float64))
    n = u.shape[1]
    half = max(1, min(half, n // 2))
    ax = np.arange(-half, half) + 0.5
    g = np.exp(-0.5 * (ax / (0.5 * half)) ** 2)
    kern = np.outer(g, g) * np.outer(np.sign(ax), np.sign(ax))
    kern /= np.abs(kern).sum()
    # outside the track the similarity is 0 (zero padding), as a padded matrix would have it
    pad = np.pad(u, ((0, 0), (half, half)))
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * half, axis=1)[:, :n]  # (dims, n, 2h)
    nov = np.empty(n)
    for a in range(0, n, 1024):  # (n, 2h, 2h) blocks a slice at a time
        blocks = np.einsum("dni,dnj->nij", win[:, a : a + 1024], win[:, a : a + 1024])
        # kernel weights sum to 1 in absolute value: blocks self-similar (1) and opposed across
        # (-1, as two textures are about the track's mean) score 1; unrelated across (0) 0.5
        nov[a : a + 1024] = np.einsum("nij,ij->n", blocks, kern)
    idx = np.arange(n)
    # half a kernel of padding at the track's edges: its own start and end are no novelty
    ramp = np.minimum(1.0, np.minimum(idx + 0.5, n - idx - 0.5) / half)
    return np.maximum(nov, 0.0) * ramp


def _tempo_novelty(grid: np.ndarray, step_s: float, params: SectionParams) -> np.ndarray:
    """Checkerboard novelty of the local tempo (log beat length, median over 5 beats against beat-tracking slips)."""
    ibi = np.diff(np.append(grid, grid[-1] + step_s))
    log_ibi = np.log2(np.maximum(ibi, 1e-3))
    pad = np.pad(log_ibi, 2, mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(pad, 5), axis=1)
    z = (smooth - smooth.mean())[None, :] / params.tempo_scale_octaves
    norms = np.abs(z[0])
    u = np.sign(z[0])
    w = np.minimum(1.0, norms)
    # similarity u_i u_j sqrt(w_i w_j): the features scaled by sqrt(w)
    return checkerboard_novelty((u * np.sqrt(w))[None, :], int(round(params.kernel_short_s / step_s / 2)))


def _tempo_change_beat(grid: np.ndarray, i: int, reach: int = 3, span: int = 4) -> int:
    """The beat near i where the mean log beat length of the next `span` beats differs most from the previous."""
    log_ibi = np.log2(np.maximum(np.diff(grid), 1e-3))
    best, best_score = i, -1.0
    for j in range(max(span, i - reach), min(len(log_ibi) - span, i + reach) + 1):
        score = abs(float(log_ibi[j : j + span].mean() - log_ibi[j - span : j].mean()))
        if score > best_score:
            best, best_score = j, score
    return best


def _peaks(curve: np.ndarray, radius: int) -> np.ndarray:
    n = len(curve)
    if n < 3:
        return np.zeros(0, dtype=int)
    pad = np.pad(curve, radius, mode="constant", constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * radius + 1)
    return np.flatnonzero((curve >= win.max(axis=1)) & (curve > 0))


def _cumulative_unit_features(frame_feats: np.ndarray) -> np.ndarray:
    """Cumulative sum over frames of the unit-normalised feature columns (zero column first)."""
    z = frame_feats / (np.linalg.norm(frame_feats, axis=0, keepdims=True) + 1e-9)
    return np.concatenate([np.zeros((z.shape[0], 1)), np.cumsum(z, axis=1)], axis=1)


def _refine(t: float, *, cumulative: np.ndarray, fps: float, search_s: float, kernel_s: float) -> float:
    """The frame near t where short-range timbre novelty peaks (a join, a cut, a drum fill's end)."""
    n = cumulative.shape[1] - 1
    half = max(2, int(round(kernel_s * fps / 2)))
    c = int(round(t * fps))
    lo, hi = max(half, c - int(search_s * fps)), min(n - half, c + int(search_s * fps) + 1)
    if hi <= lo:
        return t
    pos = np.arange(lo, hi)
    before = (cumulative[:, pos] - cumulative[:, pos - half]) / half
    after = (cumulative[:, pos + half] - cumulative[:, pos]) / half
    # distance between the mean feature before and after each candidate frame
    score = np.linalg.norm(after - before, axis=0)
    return float(pos[int(np.argmax(score))] / fps)


def find_boundaries(
    *,
    chroma: np.ndarray,
    mfcc: np.ndarray,
    frame_db: np.ndarray,
    fps: float,
    beat_times: np.ndarray,
    bar_times: np.ndarray,
    duration_s: float,
    params: SectionParams,
) -> Boundaries:
    """Section starts, their confidences and labels.

    Parameters
    ----------
    chroma, mfcc : np.ndarray
        (12, frames) chroma and (>= 14, frames) MFCCs at ``fps``.
    frame_db : np.ndarray
        Loudness per frame, dB.
    fps : float
        Frames per second of the three.
    beat_times, bar_times : np.ndarray
        The track's beats and bar starts, s.
    duration_s : float
        The track's length, s.
    params : SectionParams
        Scales, kernel widths and thresholds.

    Returns
    -------
    Boundaries
        Starts (the first 0.0), confidences 0..1 and one label per section.
    """
    n_frames = min(chroma.shape[1], mfcc.shape[1], len(frame_db))
    grid = _feature_grid(beat_times, duration_s, params)
    if len(grid) < params.min_grid_points or duration_s < 2 * params.min_section_s:
        return Boundaries(np.array([0.0]), np.array([1.0]), ("A",))
    frames = _frame_features(chroma=chroma, mfcc=mfcc, frame_db=frame_db, n_frames=n_frames, params=params)
    frame_times = np.arange(n_frames) / fps
    groups = [beat_sync(f, frame_times, grid) for f, _ in frames]
    scales = [scale for _, scale in frames]
    step_s = float(np.median(np.diff(grid)))
    nov = _novelty(groups, scales, step_s, params)
    chosen = _choose(nov, grid, duration_s, step_s, params)
    from_tempo: set[int] = set()
    if len(beat_times) >= params.min_grid_beats and params.tempo_scale_octaves > 0:
        from_tempo = _add_tempo_changes(chosen, nov, grid, duration_s, step_s, params)
    chosen.sort()

    # the whole track's running sums once; each boundary reads a window of them
    cumulative = _cumulative_unit_features(np.vstack([f / scale for f, scale in frames]))
    times, confs = _place(chosen, from_tempo, nov=nov, grid=grid, cumulative=cumulative, fps=fps, step_s=step_s,
                          bar_times=bar_times, duration_s=duration_s, params=params)
    level_db = frames[2][0][0]  # the level group's one row
    if params.silence_sections:
        times, confs = _add_silence(times, confs, frame_db=level_db, fps=fps, duration_s=duration_s, params=params)
    starts = np.array(times)
    labels = label_sections(starts, duration_s, groups=groups, scales=scales, grid=grid,
                            threshold=params.label_similarity)
    return Boundaries(starts, np.array(confs), labels)


def _feature_grid(beat_times: np.ndarray, duration_s: float, params: SectionParams) -> np.ndarray:
    """The times features are averaged between: the beats (from 0), or a fixed step without enough of them."""
    if len(beat_times) >= params.min_grid_beats:
        return np.concatenate(([0.0], beat_times[beat_times > 0.05]))
    return np.arange(0.0, duration_s, params.fallback_step_s)


def _frame_features(
    *, chroma: np.ndarray, mfcc: np.ndarray, frame_db: np.ndarray, n_frames: int, params: SectionParams
) -> list[tuple[np.ndarray, float]]:
    """(features, scale) per group, per frame: timbre (MFCC 1-13), harmony (compressed chroma), level (dB)."""
    timbre = mfcc[1:14, :n_frames].astype(np.float64)
    harmony = np.log1p(params.harmony_compression * chroma[:, :n_frames] / (float(chroma.max()) + 1e-9))
    level = np.asarray(frame_db[:n_frames], dtype=np.float64)[None, :]
    return [(timbre, params.timbre_scale), (harmony.astype(np.float64), params.harmony_scale),
            (level, params.level_scale_db)]


def _novelty(groups: list[np.ndarray], scales: list[float], step_s: float, params: SectionParams) -> np.ndarray:
    """Mean checkerboard novelty over feature groups and both kernel scales, per grid point."""
    curves = []
    for feats, scale in zip(groups, scales):
        z = (feats - feats.mean(axis=1, keepdims=True)) / scale
        # cosine similarity of the deviations, damped where the deviation is under one scale unit
        # (a steady track)
        norms = np.linalg.norm(z, axis=0)
        u = z / (norms + 1e-9)
        weight = np.minimum(1.0, norms)
        scaled = u * np.sqrt(weight)  # similarity (u_i . u_j) sqrt(w_i w_j)
        for kernel_s in (params.kernel_short_s, params.kernel_long_s):
            curves.append(checkerboard_novelty(scaled, int(round(kernel_s / step_s / 2))))
    # the mean over groups and scales: a section change moves several at once (a fill moves one)
    return np.mean(curves, axis=0)


def _choose(nov: np.ndarray, grid: np.ndarray, duration_s: float, step_s: float, params: SectionParams) -> list[int]:
    """Grid indices of the novelty peaks that pass the thresholds, strongest first, a section apart."""
    radius = max(1, int(round(params.min_section_s / step_s / 2)))
    cand = _peaks(nov, radius)
    floor = float(np.median(nov) + params.min_prominence_sd * nov.std())
    cand = [i for i in cand if nov[i] >= max(params.min_novelty, floor)]
    cand = [i for i in cand if params.min_section_s <= grid[i] <= duration_s - params.min_section_s]
    cand.sort(key=lambda i: -nov[i])
    max_count = int(duration_s // params.max_density_s)
    chosen: list[int] = []
    for i in cand:
        if len(chosen) >= max_count:
            break
        if all(abs(grid[i] - grid[j]) >= params.min_section_s for j in chosen):
            chosen.append(i)
    return chosen


def _add_tempo_changes(
    chosen: list[int], nov: np.ndarray, grid: np.ndarray, duration_s: float, step_s: float, params: SectionParams
) -> set[int]:
    """Add clear tempo changes to ``chosen`` (in place, raising ``nov`` there); the indices added.

    A clear tempo change is a section change on its own, even where the sound stays the same;
    only where the sound-based curve has not already put a boundary.
    """
    radius = max(1, int(round(params.min_section_s / step_s / 2)))
    tempo_nov = _tempo_novelty(grid, step_s, params)
    added: set[int] = set()
    for i in sorted(_peaks(tempo_nov, radius), key=lambda i: -tempo_nov[i]):
        if (
            tempo_nov[i] >= params.min_tempo_novelty
            and params.min_section_s <= grid[i] <= duration_s - params.min_section_s
            and all(abs(grid[i] - grid[j]) >= params.min_section_s for j in chosen)
        ):
            chosen.append(i)
            added.add(i)
            nov[i] = max(nov[i], tempo_nov[i])
    return added


def _place(
    chosen: list[int], from_tempo: set[int], *, nov: np.ndarray, grid: np.ndarray, cumulative: np.ndarray, fps: float,
    step_s: float, bar_times: np.ndarray, duration_s: float, params: SectionParams,
) -> tuple[list[float], list[float]]:
    """Each chosen boundary's time (refined within a beat, then onto a close bar start) and confidence."""
    times, confs = [0.0], [1.0]
    for i in chosen:
        if i in from_tempo:
            # the tempo curve is median-smoothed over 5 beats: put the boundary on the beat
            # where the beat length changes, then let the sound place it within a beat of it
            i = _tempo_change_beat(grid, i)
        t = _refine(float(grid[i]), cumulative=cumulative, fps=fps, search_s=step_s, kernel_s=params.refine_kernel_s)
        if len(bar_times):
            b = float(bar_times[np.argmin(np.abs(bar_times - t))])
            if abs(b - t) <= params.snap_to_bar_s:
                t = b
        if t - times[-1] >= 0.5 * params.min_section_s and duration_s - t >= 0.5 * params.min_section_s:
            times.append(t)
            confs.append(float(np.clip(nov[i], 0.0, 1.0)))
    return times, confs


def _add_silence(
    times: list[float], confs: list[float], *, frame_db: np.ndarray, fps: float, duration_s: float,
    params: SectionParams,
) -> tuple[list[float], list[float]]:
    """Boundaries where the music starts after, or stops before, a stretch of silence."""
    sounding = np.flatnonzero(frame_db > params.silence_db)
    if len(sounding) == 0:
        return times, confs
    onset_s, offset_s = sounding[0] / fps, (sounding[-1] + 1) / fps
    pairs = list(zip(times, confs))
    if onset_s >= params.min_silence_s:
        # the music's start replaces any boundary the features put within a short section of it
        pairs = [(0.0, 1.0), (onset_s, 1.0)] + [(t, c) for t, c in pairs[1:] if t - onset_s >= 0.5 * params.min_section_s]
    if duration_s - offset_s >= params.min_silence_s:
        pairs = [(t, c) for t, c in pairs if offset_s - t >= 0.5 * params.min_section_s or t == 0.0] + [(offset_s, 1.0)]
    return [t for t, _ in pairs], [c for _, c in pairs]


def label_sections(
    starts: np.ndarray, duration_s: float, *, groups: list[np.ndarray], scales: list[float], grid: np.ndarray,
    threshold: float,
) -> tuple[str, ...]:
    """Letters by similarity of the sections' mean features: a section like an earlier one takes its letter."""
    feats = np.vstack([(g - g.mean(axis=1, keepdims=True)) / s for g, s in zip(groups, scales)])
    ends = np.append(starts[1:], duration_s)
    means = []
    for a, b in zip(starts, ends):
        sel = (grid >= a) & (grid < b)
        means.append(feats[:, sel].mean(axis=1) if sel.any() else np.zeros(feats.shape[0]))
    labels: list[str] = []
    reps: list[np.ndarray] = []
    for m in means:
        best, best_sim = -1, -1.0
        for k, r in enumerate(reps):
            denom = np.linalg.norm(m) * np.linalg.norm(r)
            sim = float(m @ r / denom) if denom > 1e-9 else 1.0
            if sim > best_sim:
                best, best_sim = k, sim
        if best >= 0 and best_sim >= threshold:
            labels.append(_letter(best))
        else:
            reps.append(m)
            labels.append(_letter(len(reps) - 1))
    return tuple(labels)


def describe_sections(
    bounds: Boundaries,
    *,
    duration_s: float,
    segments: Segments,
    frame_db: np.ndarray,
    onset_env: np.ndarray,
    fps: float,
    rhythm: Rhythm,
    rhythm_params: RhythmParams,
    track_key: Key,
    key_of_span: Callable[[float, float], Key],
    params: SectionParams,
) -> list[Section]:
    """Each section's Echo Nest fields: loudness, tempo, key, mode and time signature with confidences.

    Parameters
    ----------
    bounds : Boundaries
        From `find_boundaries`.
    duration_s : float
        The track's length, s (the last section ends there).
    segments : Segments
        The track's segments: a section's loudness is its segments' mean ``loudness_max``.
    frame_db : np.ndarray
        Loudness per frame at ``fps``, dB: a section that never rises above
        ``params.silence_db`` is silence, with no pulse, key or mode.
    onset_env : np.ndarray
        Onset strength at ``fps``, for each section's tempo.
    fps : float
        Frames per second of ``frame_db`` and ``onset_env``.
    rhythm : Rhythm
        The track's beats and per-beat downbeat evidence: a section's meter is decoded from
        exactly the evidence the track's was.
    rhythm_params : RhythmParams
        The meter decoder's parameters.
    track_key : Key
        The track's key: short sections take it rather than a noisy one of their own.
    key_of_span : callable
        ``(start_s, end_s) -> Key``: the key network run on that stretch of the track.
    params : SectionParams
        ``silence_db``, ``min_key_s``, ``min_meter_beats``.

    Returns
    -------
    list of Section
    """
    starts = bounds.start
    ends = np.append(starts[1:], duration_s)
    beats = rhythm.beats.start
    out: list[Section] = []
    for start, end, conf, label in zip(starts, ends, bounds.confidence, bounds.label):
        a = int(round(start * fps))
        b = max(int(round(end * fps)), a + 1)
        loud = span_loudness(segment_start_s=segments.start, loudness_max_db=segments.loudness_max, from_s=start,
                             to_s=end)
        common = dict(start=float(start), duration=float(end - start), confidence=float(conf), loudness=loud,
                      label=label)
        if float(frame_db[a:b].max()) <= params.silence_db:
            # a section of silence (see _add_silence) has no pulse, key or mode to report
            out.append(Section(**common, tempo=0.0, tempo_confidence=0.0, key=-1, key_confidence=0.0, mode=-1,
                               mode_confidence=0.0, time_signature=rhythm.time_signature,
                               time_signature_confidence=0.0))
            continue
        in_sec = (beats >= start) & (beats < end)
        tempo, tempo_conf = estimate_tempo(beats[in_sec], onset_env=onset_env, onset_fps=fps)
        if np.count_nonzero(in_sec) >= params.min_meter_beats:
            net = rhythm.downbeat_net_evidence
            bonus = meter_bonus(net[in_sec] if net is not None else None, rhythm_params)
            # the kind of music (whether the chance level applies) is the file's, judged on all its beats
            _, meter, meter_conf, _ = decode_meter(down_at_beats=rhythm.downbeat_evidence[in_sec],
                                                   params=meter_params_for(rhythm_params, beats), meter_bonus=bonus)
        else:
            meter, meter_conf = rhythm.time_signature, 0.0
        sk = key_of_span(float(start), float(end)) if end - start >= params.min_key_s and track_key.key >= 0 else track_key
        out.append(Section(**common, tempo=tempo, tempo_confidence=tempo_conf, key=sk.key,
                           key_confidence=sk.key_confidence, mode=sk.mode, mode_confidence=sk.mode_confidence,
                           time_signature=meter, time_signature_confidence=meter_conf))
    return out


def _letter(k: int) -> str:
    # A..Z, then A1..Z1, ...: any number of distinct sections keeps a label
    return chr(ord("A") + k % 26) + (str(k // 26) if k >= 26 else "")
