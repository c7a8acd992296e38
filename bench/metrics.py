"""Scores (mir_eval, per the eval README's conventions) and checks of the analyzer's output."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .truth import Truth

TEMPO_TOLERANCE = 0.04  # Accuracy1/Accuracy2: within 4 %
TEMPO_FACTORS_ACC2 = (1.0, 2.0, 3.0, 1 / 2, 1 / 3)
BEAT_WINDOW_S = 0.07  # mir_eval's default f_measure window
ONSET_WINDOW_S = 0.05
SECTION_WINDOWS_S = (0.5, 3.0)
# trim_beats drops everything before 5 s; on a clip this short that would leave
# nothing to score, so short clips are scored untrimmed
MIN_TRIM_DURATION_S = 10.0

# every figure a file can have, in table order
METRICS = (
    "beat_f",
    "downbeat_f",
    "tempo_acc1",
    "tempo_acc2",
    "key_weighted",
    "meter_acc",
    "boundary_f_0.5",
    "boundary_f_3",
    "onset_f",
    "pitch_in_score",
    "segments_per_s",
    "sections_per_file",
)


@dataclass
class Estimate:
    """One system's output on one file; None where the system does not produce it."""

    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
    tempo: float | None = None
    key: str | None = None  # mir_eval spelling, "X" for no key
    meter: int | None = None
    segments: np.ndarray | None = None  # segment start times
    segment_pitches: np.ndarray | None = None  # (n, 12) chroma per segment, C first
    sections: np.ndarray | None = None  # section start times
    tempo_confidence: float | None = None
    meter_confidence: float | None = None
    key_confidence: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per component
    error: str | None = None


def _beat_f(ref: np.ndarray, est: np.ndarray, duration: float) -> float:
    import mir_eval

    if duration >= MIN_TRIM_DURATION_S:
        ref, est = mir_eval.beat.trim_beats(ref), mir_eval.beat.trim_beats(est)
    if len(ref) == 0:
        return math.nan
    if len(est) == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(ref, est, f_measure_threshold=BEAT_WINDOW_S))


def tempo_accuracy(ref: float, est: float | None) -> tuple[float, float]:
    if est is None or not est > 0:
        return 0.0, 0.0
    acc1 = abs(est - ref) <= TEMPO_TOLERANCE * ref
    acc2 = any(abs(est - f * ref) <= TEMPO_TOLERANCE * f * ref for f in TEMPO_FACTORS_ACC2)
    return float(acc1), float(acc2)


def _intervals(starts: np.ndarray, duration: float) -> np.ndarray:
    starts = np.asarray(starts, dtype=float)
    ends = np.append(starts[1:], duration)
    return np.stack([starts, ends], axis=1)


def score(est: Estimate, truth: Truth, duration: float) -> dict[str, float]:
    """Figures this estimate can be scored on against this truth (absent keys: not applicable)."""
    import mir_eval

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        # mir_eval warns on empty estimates; an empty estimate simply scores 0
        warnings.simplefilter("ignore")
        if truth.beats is not None and est.beats is not None:
            out["beat_f"] = _beat_f(truth.beats, est.beats, duration)
        if truth.downbeats is not None and est.downbeats is not None:
            out["downbeat_f"] = _beat_f(truth.downbeats, est.downbeats, duration)
        if truth.tempo is not None and (est.tempo is not None or est.beats is not None):
            out["tempo_acc1"], out["tempo_acc2"] = tempo_accuracy(truth.tempo, est.tempo)
        if truth.key is not None and est.key is not None:
            out["key_weighted"] = float(mir_eval.key.weighted_score(truth.key, est.key))
        if truth.meter is not None and est.meter is not None:
            out["meter_acc"] = float(est.meter == truth.meter)
        if truth.section_intervals and est.sections is not None:
            est_iv = _intervals(est.sections, duration)
            for w in SECTION_WINDOWS_S:
                fs = []
                for ref_iv in truth.section_intervals:
                    # the reference's last interval may end a little past the decoded audio
                    ref_iv = ref_iv.copy()
                    ref_iv[-1, 1] = max(ref_iv[-1, 1], est_iv[-1, 1])
                    est_fit = est_iv.copy()
                    est_fit[-1, 1] = ref_iv[-1, 1]
                    # trim=True: the track's start and end are boundaries in both by
                    # construction and would count as free hits
                    _, _, f = mir_eval.segment.detection(ref_iv, est_fit, window=w, trim=True)
                    fs.append(f)
                out[f"boundary_f_{w:g}"] = float(np.mean(fs))  # averaged over annotators
        if truth.onsets is not None and est.segments is not None:
            f, _, _ = mir_eval.onset.f_measure(truth.onsets, est.segments, window=ONSET_WINDOW_S)
            out["onset_f"] = float(f)
        if truth.notes is not None and est.segments is not None and est.segment_pitches is not None:
            share = strongest_pitch_sounding(truth.notes, est.segments, est.segment_pitches, duration)
            if share is not None:
                out["pitch_in_score"] = share
    if est.segments is not None and duration > 0:
        out["segments_per_s"] = len(est.segments) / duration
    if est.sections is not None:
        out["sections_per_file"] = float(len(est.sections))
    return {k: v for k, v in out.items() if not math.isnan(v)}


def strongest_pitch_sounding(
    notes: np.ndarray, starts_s: np.ndarray, pitches: np.ndarray, duration: float
) -> float | None:
    """Share of segments whose strongest pitch class is a note the score sounds during the segment.

    Segments during which the score sounds nothing (rests, the render's tail)
    are not counted.
    """
    ends = np.append(starts_s[1:], duration)
    hits, counted = 0, 0
    for a, b, chroma in zip(starts_s, ends, pitches):
        live = notes[(notes[:, 0] < b) & (notes[:, 1] > a)]
        if live.size == 0:
            continue
        counted += 1
        hits += int(int(np.argmax(chroma)) in set((live[:, 2].astype(int) % 12).tolist()))
    return hits / counted if counted else None


def mean_of(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def confidence_split(pairs: list[tuple[float, float]]) -> dict | None:
    """Mean figure of the top and bottom halves of files ranked by confidence.

    A useful confidence puts the files we get right in the top half.  Ties are
    broken by file order (stable sort), so the split is deterministic.
    """
    if len(pairs) < 4:
        return None
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0])  # sorted() is stable
    half = len(order) // 2
    bottom = [pairs[i][1] for i in order[:half]]
    top = [pairs[i][1] for i in order[half:]]
    return {
        "n": len(pairs),
        "top_half": float(np.mean(top)),
        "bottom_half": float(np.mean(bottom)),
        "top_conf_min": float(pairs[order[half]][0]),
        "distinct_confidences": len({round(p[0], 3) for p in pairs}),
    }


def check_analysis(analysis, doc: dict | None) -> list[str]:
    """Things in our raw output that look wrong; the document clips and rounds, which would hide them."""
    from analyzer.stages.rhythm import RhythmParams

    issues: list[str] = []
    r, k, seg = analysis.rhythm, analysis.key, analysis.segments
    duration = analysis.audio.duration_s

    def finite(name: str, x) -> None:
        a = np.asarray(x, dtype=float)
        if a.size and not np.all(np.isfinite(a)):
            issues.append(f"non-finite values in {name}")

    def unit(name: str, x) -> None:
        a = np.asarray(x, dtype=float)
        if a.size and (np.nanmin(a) < -1e-9 or np.nanmax(a) > 1 + 1e-9):
            issues.append(f"{name} outside 0..1 (min {np.nanmin(a):.3g}, max {np.nanmax(a):.3g})")

    for name, ev in (("beats", r.beats), ("bars", r.bars), ("tatums", r.tatums)):
        finite(f"{name}.start", ev.start)
        finite(f"{name}.duration", ev.duration)
        unit(f"{name}.confidence", ev.confidence)
    finite("segments.start", seg.start)
    finite("segments.loudness", np.concatenate([seg.loudness_start, seg.loudness_max]))
    finite("segments.timbre", seg.timbre)
    unit("segments.confidence", seg.confidence)
    unit("segments.pitches", seg.pitches)
    for name in ("tempo_confidence", "time_signature_confidence"):
        unit(f"track.{name}", [getattr(r, name)])
    unit("track.key_confidence", [k.key_confidence])
    unit("track.mode_confidence", [k.mode_confidence])
    for s in analysis.sections:
        for name in ("confidence", "tempo_confidence", "key_confidence", "mode_confidence", "time_signature_confidence"):
            unit(f"sections.{name}", [getattr(s, name)])

    p = RhythmParams()
    if len(r.beats) == 0 and duration >= 10:
        issues.append("no beats")
    elif len(r.beats) and not (p.min_bpm * 0.97 <= r.tempo_bpm <= p.max_bpm * 1.03):
        issues.append(f"track tempo {r.tempo_bpm:.1f} outside the tracker's {p.min_bpm:g}-{p.max_bpm:g} BPM")
    if not 1 <= r.time_signature <= 7:
        issues.append(f"time_signature {r.time_signature} outside 1..7")
    if len(r.bars) and len(r.beats) and not np.all(np.isin(np.round(r.bars.start, 6), np.round(r.beats.start, 6))):
        issues.append("bar starts that are not beat starts")
    if k.key < 0 and duration >= 10:
        issues.append("no key")
    if len(seg) and np.any(seg.duration <= 0):
        issues.append(f"{int(np.sum(seg.duration <= 0))} segments of zero duration")
    if len(seg) and np.any(seg.loudness_max + 1e-6 < seg.loudness_start):
        issues.append(f"{int(np.sum(seg.loudness_max + 1e-6 < seg.loudness_start))} segments with loudness_max < loudness_start")
    if len(seg) and np.any(seg.loudness_max_time > seg.duration + 1e-6):
        issues.append("segments with loudness_max_time past their end")
    if len(seg) and float(seg.duration.max()) > 5.0:
        issues.append(f"a segment of {float(seg.duration.max()):.1f} s")
    if len(analysis.sections) <= 1 and duration >= 60:
        issues.append(f"one section on {duration:.0f} s")
    for s in analysis.sections:
        if s.tempo <= 0 and len(r.beats) >= 8 and s.key >= 0:  # key -1: a section of silence
            issues.append(f"section at {s.start:.1f} s has tempo 0")
            break
    # the Echo Nest 3.2 scale reads full-scale broadband material a few dB above 0 (its own
    # "Fancy" analysis has segment peaks at +0.3 dB); beyond +6 dB something is wrong
    if not analysis.loudness <= 6.0:
        issues.append(f"track loudness {analysis.loudness:.2f} dB, more than 6 dB above 0")
    if doc is not None:
        tr = doc["track"]
        if tr["end_of_fade_in"] > 0.5 * duration:
            issues.append(f"end_of_fade_in {tr['end_of_fade_in']:.1f} s past half the track")
    return issues


def event_confidence_pairs(
    ref: np.ndarray | None, est: np.ndarray, conf: np.ndarray, duration: float
) -> list[tuple[float, int]]:
    """(confidence, 1 if the event is within the beat window of a reference event) for each estimate.

    The first 5 s are skipped on clips long enough to trim, as the F-measure does.
    """
    if ref is None or len(est) == 0:
        return []
    ref = np.asarray(ref, dtype=float)
    est = np.asarray(est, dtype=float)
    conf = np.asarray(conf, dtype=float)
    if duration >= MIN_TRIM_DURATION_S:
        keep = est >= 5.0
        est, conf = est[keep], conf[keep]
        ref = ref[ref >= 5.0]
    if len(est) == 0 or len(ref) == 0:
        return []
    dist = np.min(np.abs(est[:, None] - ref[None, :]), axis=1)
    return [(float(c), int(d <= BEAT_WINDOW_S)) for c, d in zip(conf, dist)]


def pooled_correlation(pairs: list[tuple[float, int]]) -> dict | None:
    """Point-biserial correlation of confidence with correctness, and mean confidence of each."""
    if len(pairs) < 10:
        return None
    c = np.array([p[0] for p in pairs])
    ok = np.array([p[1] for p in pairs], dtype=float)
    if ok.min() == ok.max() or c.std() == 0:
        return None
    return {
        "n": len(pairs),
        "share_correct": float(ok.mean()),
        "correlation": float(np.corrcoef(c, ok)[0, 1]),
        "mean_conf_correct": float(c[ok == 1].mean()),
        "mean_conf_wrong": float(c[ok == 0].mean()),
    }

