"""Long files: analysis in blocks against a whole-file run, and the memory each takes.

    python -m bench.longfile [--eval-dir DIR] [--json OUT.json]

The renders (exact score truth) are joined end to end into one long file
(~12.5 minutes, in ``bench/.cache/``, never committed), longer than the 7
minutes up to which ``FeatureParams`` computes everything in one block.  The
analyzer then runs on it twice, each in its own process so that each peak RSS
is its own: with the defaults (frame features and networks in 5-minute blocks
with 60 s of context, the beat DBN in 2-minute windows, key probabilities
averaged over 5-minute parts) and as one block (all three made longer than the
file).  Both are scored against the joined truth (beats, downbeats, note
onsets, the pitch sounding in each segment, the joins as section
boundaries), piece by piece, and against each other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .run import REPO_ROOT, _jsonable, _table, machine_text, resolve_eval_dir
from .truth import Truth, bench_cache_dir, load_set

SR = 22050
WHOLE = 1e7  # seconds: longer than any file, so everything is one block / one window
FIGURES = ("beat_f", "downbeat_f", "onset_f", "pitch_in_score")


# ---------------------------------------------------------------- the long file


def build_long_file(eval_dir: Path, cache_dir: Path) -> tuple[Path, Truth, np.ndarray]:
    """(audio path, joined truth, piece start times with the end appended) from the renders."""
    import soundfile as sf

    from analyzer.stages.audio import decode

    items = load_set("renders", eval_dir)
    if not items:
        raise SystemExit(f"no renders in {eval_dir}: nothing to build a long file from")
    key = hashlib.md5(json.dumps([it.name for it in items]).encode()).hexdigest()[:12]
    path = cache_dir / f"long-{key}.flac"
    parts, starts = [], [0.0]
    for it in items:
        samples = decode(it.path).samples
        if not path.exists():
            parts.append(samples)
        starts.append(starts[-1] + len(samples) / SR)
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.flac")
        sf.write(tmp, np.concatenate(parts), SR, subtype="PCM_24")
        os.replace(tmp, path)

    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(it.truth, field) + t0 for it, t0 in zip(items, starts)])

    notes = np.concatenate([it.truth.notes + [t0, t0, 0.0] for it, t0 in zip(items, starts)])
    ends = np.asarray(starts)
    truth = Truth(
        beats=joined("beats"), downbeats=joined("downbeats"), onsets=joined("onsets"), notes=notes,
        section_intervals=[np.stack([ends[:-1], ends[1:]], axis=1)],
    )
    return path, truth, ends


# ---------------------------------------------------------------- one run (child process)


def configure(mode: str):
    from analyzer.stages.features import FeatureParams
    from analyzer.pipeline import AnalysisConfig
    from analyzer.stages.rhythm import RhythmParams

    if mode == "blocks":
        return AnalysisConfig()
    if mode == "whole":
        return AnalysisConfig(
            features=FeatureParams(block_s=WHOLE, key_block_s=WHOLE), rhythm=RhythmParams(dbn_window_s=WHOLE)
        )
    raise ValueError(mode)


def peak_rss_mb() -> float:
    """This process's peak resident size (VmHWM: ru_maxrss would include the parent's, kept across exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, audio_path: Path, out: Path) -> None:
    """Analyse ``audio_path`` in ``mode`` and write the estimate, wall time and peak RSS to ``out``."""
    t0 = time.perf_counter()
    from analyzer.stages.audio import decode
    from analyzer.document import build_document
    from analyzer.stages.features import Models
    from analyzer.pipeline import analyze

    models = Models()
    t_start = time.perf_counter() - t0
    t1 = time.perf_counter()
    audio = decode(audio_path)
    analysis = analyze(audio, models=models, config=configure(mode))
    build_document(analysis, timestamp=0, analysis_time_s=0.0)
    wall = time.perf_counter() - t1
    seg, r = analysis.segments, analysis.rhythm
    np.savez(
        out,
        beats=np.asarray(r.beats.start, float), downbeats=np.asarray(r.bars.start, float),
        segments=np.asarray(seg.start, float), pitches=np.asarray(seg.pitches, float),
        timbre=np.asarray(seg.timbre, float), loudness_max=np.asarray(seg.loudness_max, float),
        sections=np.array([s.start for s in analysis.sections], float),
        tempo=float(r.tempo_bpm), key=analysis.key.label, loudness=float(analysis.loudness),
        duration=audio.duration_s, wall_s=wall, startup_s=t_start,
        peak_rss_mb=peak_rss_mb(),
    )


def run_mode(mode: str, audio_path: Path, work: Path) -> dict:
    out = work / f"{mode}.npz"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run(
        [sys.executable, "-m", "bench.longfile", "--child", mode, "--audio", str(audio_path), "--out", str(out)],
        check=True, cwd=REPO_ROOT, env=env,
    )
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------- scoring


def _estimate(r: dict, lo: float = 0.0, hi: float = np.inf):
    from .metrics import Estimate

    def within(x):
        return (x >= lo) & (x < hi)

    seg = within(r["segments"])
    return Estimate(
        beats=r["beats"][within(r["beats"])] - lo, downbeats=r["downbeats"][within(r["downbeats"])] - lo,
        segments=r["segments"][seg] - lo, segment_pitches=r["pitches"][seg],
        sections=r["sections"][within(r["sections"])] - lo,
    )


def _piece_truth(truth: Truth, lo: float, hi: float) -> Truth:
    def cut(x):
        return x[(x >= lo) & (x < hi)] - lo

    notes = truth.notes[(truth.notes[:, 0] >= lo) & (truth.notes[:, 0] < hi)] - [lo, lo, 0.0]
    return Truth(beats=cut(truth.beats), downbeats=cut(truth.downbeats), onsets=cut(truth.onsets), notes=notes)


def agreement(a: dict, b: dict) -> dict:
    """How far the block run is from the whole-file run, event by event."""
    import mir_eval

    beats_f = mir_eval.beat.f_measure(b["beats"], a["beats"], f_measure_threshold=0.07)
    seg_f, _, _ = mir_eval.onset.f_measure(b["segments"], a["segments"], window=0.05)
    # segments matched one to one (within 10 ms): their features side by side
    pairs = mir_eval.util.match_events(b["segments"], a["segments"], 0.01)
    ib, ia = (np.array([p[i] for p in pairs], dtype=int) for i in (0, 1))
    dl = np.abs(a["loudness_max"][ia] - b["loudness_max"][ib])
    dt_ = np.abs(a["timbre"][ia] - b["timbre"][ib]).max(axis=1)
    dp = np.abs(a["pitches"][ia] - b["pitches"][ib]).max(axis=1)
    return {
        "beat_f_vs_whole": float(beats_f), "segment_f_vs_whole": float(seg_f),
        "segments_matched_10ms": int(len(pairs)), "segments": [int(len(a["segments"])), int(len(b["segments"]))],
        "loudness_max_abs_diff_db_p99": float(np.percentile(dl, 99)) if dl.size else None,
        "timbre_abs_diff_p99": float(np.percentile(dt_, 99)) if dt_.size else None,
        "pitches_abs_diff_p99": float(np.percentile(dp, 99)) if dp.size else None,
        "tempo": [float(a["tempo"]), float(b["tempo"])], "key": [str(a["key"]), str(b["key"])],
        "loudness_db": [float(a["loudness"]), float(b["loudness"])],
    }


def score_runs(runs: dict[str, dict], truth: Truth, ends: np.ndarray) -> dict:
    from .metrics import score

    out: dict = {}
    for mode, r in runs.items():
        duration = float(r["duration"])
        whole = score(_estimate(r), truth, duration)
        pieces = [
            score(_estimate(r, lo, hi), _piece_truth(truth, lo, hi), hi - lo) for lo, hi in zip(ends[:-1], ends[1:])
        ]
        out[mode] = {
            "file": whole,
            "pieces": pieces,
            "wall_s": float(r["wall_s"]), "startup_s": float(r["startup_s"]),
            "realtime_factor": duration / float(r["wall_s"]), "peak_rss_mb": float(r["peak_rss_mb"]),
        }
    if {"blocks", "whole"} <= runs.keys():
        out["agreement"] = agreement(runs["blocks"], runs["whole"])
        diffs = {}
        for fig in FIGURES:
            d = [p.get(fig, np.nan) - q.get(fig, np.nan) for p, q in zip(out["blocks"]["pieces"], out["whole"]["pieces"])]
            d = np.asarray(d, dtype=float)
            d = d[np.isfinite(d)]
            if d.size:
                diffs[fig] = {"mean": float(d.mean()), "max_abs": float(np.abs(d).max()), "n": int(d.size)}
        out["piece_differences"] = diffs
    return out


def report(res: dict, duration_s: float, n_pieces: int) -> str:
    lines = [f"## Long file: {n_pieces} renders joined, {duration_s / 60:.1f} min", ""]
    rows = []
    for mode in ("blocks", "whole"):
        if mode not in res:
            continue
        r = res[mode]
        f = r["file"]
        rows.append([
            "defaults (blocks)" if mode == "blocks" else "one block",
            *(f"{f.get(k, float('nan')):.3f}" for k in (*FIGURES, "boundary_f_3")),
            f"{r['realtime_factor']:.1f}x", f"{r['peak_rss_mb']:.0f}",
        ])
    lines.append(_table(
        ["run", "beat F", "downbeat F", "onset F", "pitch sounding", "joins F@3", "realtime", "peak RSS MB"], rows
    ))
    if "agreement" in res:
        a, d = res["agreement"], res["piece_differences"]
        lines += [
            "",
            f"Blocks vs one block: beats F {a['beat_f_vs_whole']:.3f} (70 ms), segment starts F "
            f"{a['segment_f_vs_whole']:.3f} (50 ms), {a['segments'][0]} vs {a['segments'][1]} segments, "
            f"{a['segments_matched_10ms']} matched within 10 ms; of those, 99th percentile |difference|: "
            f"loudness_max {a['loudness_max_abs_diff_db_p99']:.3f} dB, timbre {a['timbre_abs_diff_p99']:.3f}, "
            f"pitches {a['pitches_abs_diff_p99']:.3f}; tempo {a['tempo'][0]:.2f}/{a['tempo'][1]:.2f}, "
            f"key {a['key'][0]}/{a['key'][1]}, loudness {a['loudness_db'][0]:.2f}/{a['loudness_db'][1]:.2f} dB.",
            "",
            "Per piece, blocks minus one block (mean, largest |difference|): "
            + "; ".join(f"{k} {v['mean']:+.4f} ({v['max_abs']:.4f})" for k, v in d.items()) + ".",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.longfile", description=__doc__.split("\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=("blocks", "whole"), help=argparse.SUPPRESS)
    ap.add_argument("--audio", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.audio, args.out)
        return 0

    eval_dir = resolve_eval_dir(args.eval_dir)
    cache = bench_cache_dir()
    path, truth, ends = build_long_file(eval_dir, cache)
    work = cache / "longfile"
    work.mkdir(parents=True, exist_ok=True)
    runs = {mode: run_mode(mode, path, work) for mode in ("blocks", "whole")}
    res = score_runs(runs, truth, ends)
    duration = float(runs["blocks"]["duration"])
    print(f"Run {dt.date.today().isoformat()} on {machine_text()}\n")
    print(report(res, duration, len(ends) - 1))
    if args.json:
        args.json.write_text(json.dumps(_jsonable({"date": dt.date.today().isoformat(), "duration_s": duration,
                                                    **res}), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
