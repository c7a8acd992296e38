"""Track, section and frame loudness on the Echo Nest's scale, and fades.

The level of every frame is the auditory loudness of :mod:`analyzer.stages.auditory`
(the mean over critical bands of masked, ear-weighted band levels, dB, floored
at -60).  A segment's ``loudness_max`` is the peak of that curve within it.

The **track's** loudness is the loudness of its long-term average spectrum
between the fades: each band's power averaged over the body, then read as a
frame is read.  The Echo Nest documents say loudness is "averaged across the
track"; chosen leaving one song out over the five Echo Nest pairs
(``python -m bench.fidelity --loso``), against the mean ``loudness_max`` of the
segments between the fades (the definition before, which matched "Fancy" alone
and read 0.9-6.7 dB low on the others), it is within 0.5 dB of the Echo Nest on
three songs and 4.5 dB low on solo piano.  A **section's** loudness is still
the mean ``loudness_max`` of its segments (``span_loudness``).

Fades are read on the same curve against an absolute silence level
(:class:`FadeParams`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.stages.auditory import FLOOR_DB


@dataclass(frozen=True)
class FadeParams:
    """The fade detector's constants (``bench.fidelity --loso`` chose the fitted ones leaving one song out).

    Silence is a level on the loudness scale, not relative to the track: a song that starts loud after
    a gap ends its fade-in where the sound starts, and a clip cut out of a song mid-sound has no fade
    at either end, however its level moves (the Echo Nest's own analyses of the five pairs).
    """

    # below this the track is silent (dB on the loudness scale); fitted leaving one song out (-42.5 on every fold
    # that has the solo piano in its training songs, -45 without it)
    silence_db: float = -42.5
    # the level the silence test reads is smoothed over this long (an onset's first frames count)
    onset_smooth_s: float = 0.05
    # a fade-in that starts from silence continues while the 1 s-smoothed level still rises and stays this far
    # below the body: a gain ramp ends where the level stops rising (synthesized ramps: tests/test_stages.py)
    ramp_below_body_db: float = 12.0
    ramp_smooth_s: float = 1.0
    monotone_tolerance_db: float = 0.5
    # the fade-out starts half a window before the level, averaged over this window (power mean, centred), last
    # falls to half the body's power; fitted leaving one song out (2-3 s on every fold)
    fade_out_window_s: float = 2.5
    fade_out_below_body_db: float = 3.0  # half power: a definition, not fitted


@dataclass(frozen=True)
class Fades:
    end_of_fade_in: float
    start_of_fade_out: float


def span_loudness(*, segment_start_s: np.ndarray, loudness_max_db: np.ndarray, from_s: float, to_s: float) -> float:
    """Mean ``loudness_max`` (dB) of the segments starting in [from_s, to_s); the floor where there are none."""
    starts = np.asarray(segment_start_s, dtype=np.float64)
    sel = (starts >= from_s) & (starts < to_s)
    if not sel.any():
        return FLOOR_DB
    return float(np.mean(np.asarray(loudness_max_db, dtype=np.float64)[sel]))


def track_loudness(*, bands_db: np.ndarray, fps: float, fades: Fades, floor_db: float = FLOOR_DB) -> float:
    """The track's ``loudness``, dB: the loudness of its long-term average spectrum between the fades.

    Each critical band's power is averaged over the frames between the end of the fade-in and the start
    of the fade-out; the loudness of that average spectrum is read as every frame's is (the mean of the
    bands' dB levels, floored).  The whole track counts where nothing lies between the fades.

    Parameters
    ----------
    bands_db : np.ndarray
        (n_bands, n_frames) critical-band levels, dB (``AuditorySpectrogram.bands_db``).
    fps : float
        Frames per second of ``bands_db``.
    fades : Fades
        The track's fades, seconds.
    floor_db : float
        The scale's floor, dB.

    Returns
    -------
    float
        Loudness, dB (>= ``floor_db``).
    """
    n = bands_db.shape[1]
    lo, hi = int(round(fades.end_of_fade_in * fps)), int(round(fades.start_of_fade_out * fps))
    lo, hi = min(max(lo, 0), n), min(max(hi, 0), n)
    if hi <= lo:
        lo, hi = 0, n
    if hi <= lo:
        return floor_db
    total = np.zeros(bands_db.shape[0])
    for a in range(lo, hi, 65536):  # a block at a time: an hour's bands are not copied to float64 whole
        b = min(hi, a + 65536)
        total += np.sum(10.0 ** (bands_db[:, a:b].astype(np.float64) / 10.0), axis=1)
    band_db = 10.0 * np.log10(np.maximum(total / (hi - lo), 1e-30))
    return float(np.mean(np.maximum(band_db, floor_db)))


def pool_db(frame_db: np.ndarray, factor: int, n_out: int) -> np.ndarray:
    """Energy mean of each group of ``factor`` frames centred on every ``factor``-th frame: a coarser grid."""
    db = np.asarray(frame_db, dtype=np.float64)
    power = 10.0 ** (db / 10.0)
    pad = np.pad(power, (factor // 2, factor), mode="edge")
    c = np.concatenate(([0.0], np.cumsum(pad)))
    starts = np.arange(n_out) * factor
    starts = np.minimum(starts, len(pad) - factor)
    out = 10.0 * np.log10(np.maximum((c[starts + factor] - c[starts]) / factor, 1e-12))
    return np.maximum(out, FLOOR_DB)


def _centred_power_mean(frame_db: np.ndarray, window: int) -> np.ndarray:
    """Power mean of ``frame_db`` over ``window`` frames centred on each frame (shorter at the edges), dB."""
    n = len(frame_db)
    c = np.concatenate(([0.0], np.cumsum(10.0 ** (np.asarray(frame_db, dtype=np.float64) / 10.0))))
    i = np.arange(n)
    lo = np.clip(i - window // 2, 0, n)
    hi = np.clip(i + window - window // 2, 0, n)
    return 10.0 * np.log10(np.maximum((c[hi] - c[lo]) / np.maximum(hi - lo, 1), 1e-12))


def detect_fades(*, frame_db: np.ndarray, fps: float, duration_s: float, params: FadeParams) -> Fades:
    """Where the fade-in ends and the fade-out starts (0 and the duration where there is none).

    Parameters
    ----------
    frame_db : np.ndarray
        The loudness curve (dB on the Echo Nest's scale, floor -60), one value per frame.
    fps : float
        Frames per second of ``frame_db``.
    duration_s : float
        The track's duration, seconds.
    params : FadeParams
        The detector's constants.

    Returns
    -------
    Fades
        ``end_of_fade_in``: where the first sound above silence starts, or, where the track rises out of
        silence by a gain ramp, where the ramp ends; 0 when the track does not start in silence.
        ``start_of_fade_out``: where a track that ends in silence last leaves its body level (half a
        ``fade_out_window_s`` before the window's power mean falls 3 dB under the body); the duration
        when the track does not end in silence.
    """
    db = np.asarray(frame_db, dtype=np.float64)
    n = len(db)
    if n == 0:
        return Fades(0.0, duration_s)
    onset = _centred_power_mean(db, max(1, int(round(params.onset_smooth_s * fps))))
    sounding = np.flatnonzero(onset >= params.silence_db)
    if sounding.size == 0:  # silent throughout, on this scale
        return Fades(0.0, duration_s)
    window = max(1, int(round(params.fade_out_window_s * fps)))
    env = _centred_power_mean(db, window)
    above_silence = env[env >= params.silence_db]
    body = float(np.median(above_silence)) if above_silence.size else float(env.max())

    # fade-in: silence, then the first sound; where that sound is a gain ramp far below the body, its top
    i = int(sounding[0])
    if i > 0:
        ramp_frames = max(1, int(round(params.ramp_smooth_s * fps)))
        ramp = _centred_power_mean(db, ramp_frames)
        step = params.monotone_tolerance_db / ramp_frames
        if ramp[i] < body - params.ramp_below_body_db:
            while i + 1 < n and ramp[i + 1] > ramp[i] + step and ramp[i] < body - 1.0:
                i += 1
    # sound from the first frames on (within the smoothing): nothing faded in
    fade_in_end = i / fps if i / fps > params.onset_smooth_s else 0.0

    # fade-out: only where the track ends in silence
    tail = onset[max(0, n - int(round(0.5 * fps))):]
    fade_out_start = duration_s
    if tail.max() < params.silence_db:
        at_body = np.flatnonzero(env >= body - params.fade_out_below_body_db)
        if at_body.size:
            fade_out_start = at_body[-1] / fps - 0.5 * params.fade_out_window_s
    fade_in_end = float(min(fade_in_end, duration_s))
    return Fades(fade_in_end, float(min(max(fade_out_start, fade_in_end), duration_s)))
