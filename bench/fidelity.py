"""Echo Nest fidelity: our documents beside the Echo Nest's own analyses of the same audio files.

    python -m bench.fidelity [--eval-dir DIR] [--json OUT.json] [--no-jukebox] [--loso]

For every pair in ``EVAL/echonest-pairs/*/`` (an audio file and ``echonest.json``,
the Echo Nest's analysis of exactly that file) the analyzer writes its
document, and three things judge it:

* the pairs' own scorer (``EVAL/echonest-pairs/score.py``, run as a program):
  one time offset from the beats, then segment onsets, pitches, timbre,
  loudness, sections and fades;
* the Infinite Jukebox's branch finder (``../shared/clients/jukebox``, run with
  ``node`` where it exists): which beats can jump to which, with the Echo
  Nest's own features as the judge of our branches;
* our own diagnostics: the loudness scale's offset, timbre spreads beside the
  Echo Nest's on the pairs and on the Million Song Dataset documents (the
  timbre shapes of dims 2-4 are judged leaving one song out, ``--loso``).

With ``--loso``, every constant a layer fits is chosen leaving one song out
(:mod:`bench.fidelity_loso`): the folds and their mean are printed after the table.

Nothing of the pairs is copied: documents go to ``bench/.cache/fidelity/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .run import Ours, _jsonable, _table, machine_text, resolve_eval_dir
from .truth import AUDIO_EXTENSIONS, bench_cache_dir

# figure -> (target text, test); the targets, checked per pair
TARGETS = {
    "segment_onsetF_50ms": (">= 0.85", lambda v: v >= 0.85),
    "segment_lag_s": ("within +-0.015", lambda v: abs(v) <= 0.015 + 1e-9),
    "segment_rate_ratio": ("0.85-1.15", lambda v: 0.85 <= v <= 1.15),
    "pitch_cosine_matched": (">= 0.92", lambda v: v >= 0.92),
    "timbre_corr_dim1": (">= 0.85", lambda v: v >= 0.85),
    "timbre_corr_dim2": (">= 0.85", lambda v: v >= 0.85),
    "timbre_corr_dim3": (">= 0.85", lambda v: v >= 0.85),
    "timbre_corr_dim4": (">= 0.85", lambda v: v >= 0.85),
    "loudness_max_corr": (">= 0.9", lambda v: v >= 0.9),
    "attack_rise_db_diff": ("within +-2", lambda v: abs(v) <= 2.0),
    "attack_time_s_diff": ("within +-0.015", lambda v: abs(v) <= 0.015 + 1e-9),
    "loudness_diff_db": ("within +-1.5", lambda v: abs(v) <= 1.5),
    "fade_in_diff_s": ("within +-0.5", lambda v: abs(v) <= 0.5),
    "fade_out_diff_s": ("within +-0.5", lambda v: abs(v) <= 0.5),
    "sectionF_3s_vs_en": (">= 0.6", lambda v: v >= 0.6),
    "timbre_std_ratio_dims1to12": ("each 0.8-1.25", lambda v: all(0.8 <= x <= 1.25 for x in v)),
    "jukebox_branch_precision": (">= 0.45", lambda v: v >= 0.45),
    "jukebox_branch_recall": (">= 0.7", lambda v: v >= 0.7),
    "jukebox_threshold_ratio": ("0.8-1.2", lambda v: 0.8 <= v <= 1.2),
}
# Spotify's analyzer 4.0.0 against the Echo Nest 3.1.3 on one song (the anchor column)
ANCHOR = {
    "segment_onsetF_50ms": 0.93, "segment_lag_s": 0.015, "segment_rate_ratio": 0.97, "pitch_cosine_matched": 0.97,
    "timbre_corr_dim1": 0.99, "timbre_corr_dim2": 0.99, "timbre_corr_dim3": 0.97, "timbre_corr_dim4": 0.92,
    "loudness_max_corr": 0.97, "loudness_diff_db": 0.4, "fade_out_diff_s": -0.1, "sectionF_3s_vs_en": 0.78,
    "jukebox_branch_precision": 0.46, "jukebox_branch_recall": 0.75, "jukebox_threshold_ratio": 1.0,
}


def find_pairs(eval_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, audio, echonest.json) for each pair folder."""
    root = eval_dir / "echonest-pairs"
    pairs = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        ref = folder / "echonest.json"
        audio = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_EXTENSIONS]
        if ref.is_file() and audio:
            pairs.append((folder.name, audio[0], ref))
    return pairs


def run_scorer(scorer: Path, ours: Path, ref: Path) -> dict:
    out = subprocess.run([sys.executable, str(scorer), str(ours), str(ref)], capture_output=True, text=True, check=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    for i, v in enumerate(d.pop("timbre_corr_dims1to4", []) or []):
        d[f"timbre_corr_dim{i + 1}"] = v
    return d


def run_jukebox(jukebox: Path, ref: Path, ours: Path, shift_s: float) -> dict | None:
    if shutil.which("node") is None or not jukebox.is_file():
        return None
    out = subprocess.run(["node", str(jukebox), str(ref), str(ours), f"{shift_s:.3f}"], capture_output=True, text=True,
                         check=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "jukebox_branch_precision": d["branch_precision_by_ref"],
        "jukebox_branch_recall": d["branch_recall_of_ref"],
        "jukebox_threshold_ours": d["candidate"]["threshold"],
        "jukebox_threshold_echonest": d["ref"]["threshold"],
        "jukebox_threshold_ratio": d["candidate"]["threshold"] / max(d["ref"]["threshold"], 1e-9),
    }


def _match(ref: np.ndarray, est: np.ndarray, window: float) -> list[tuple[int, int]]:
    import mir_eval

    return mir_eval.util.match_events(ref, est, window)


def diagnostics(doc: dict, ref: dict, shift_s: float) -> dict:
    """Loudness offset and timbre spreads on matched segments (the scorer's alignment)."""
    ours_start = np.array([s["start"] for s in doc["segments"]]) + shift_s
    ref_start = np.array([s["start"] for s in ref["segments"]])
    pairs = _match(ref_start, ours_start, 0.05)
    lm_o = np.array([doc["segments"][j]["loudness_max"] for _, j in pairs])
    lm_r = np.array([ref["segments"][i]["loudness_max"] for i, _ in pairs])
    t_o = np.array([s["timbre"] for s in doc["segments"]])
    t_r = np.array([s["timbre"] for s in ref["segments"]])
    ratio = t_o.std(axis=0) / np.maximum(t_r.std(axis=0), 1e-9)
    return {
        "loudness_max_offset_db": float(np.median(lm_r - lm_o)) if len(pairs) else None,  # theirs - ours
        "timbre_sd_ratio": [round(float(x), 2) for x in ratio],
        "timbre_sd_ratio_dims5to12": [round(float(x), 2) for x in ratio[4:]],
    }


def msd_spreads(eval_dir: Path) -> list[list[float]]:
    """Per-dimension timbre standard deviation of each Million Song Dataset document."""
    out = []
    for p in sorted((eval_dir / "echonest").glob("*.json")):
        t = np.array([s["timbre"] for s in json.loads(p.read_text(encoding="utf-8"))["segments"]])
        out.append([round(float(x), 1) for x in t.std(axis=0)])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--no-jukebox", action="store_true", help="skip the Infinite Jukebox client (needs node)")
    p.add_argument("--loso", action="store_true", help="also choose each fitted constant leaving one song out")
    args = p.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    pairs = find_pairs(eval_dir) if eval_dir.is_dir() else []
    if not pairs:
        print(f"bench.fidelity: no Echo Nest pairs under {eval_dir / 'echonest-pairs'}; skipping", file=sys.stderr)
        return 2
    scorer = eval_dir / "echonest-pairs" / "score.py"
    jukebox = eval_dir.parent / "clients" / "jukebox" / "jukebox.mjs"
    out_dir = bench_cache_dir() / "fidelity"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ours = Ours()
    result: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                    "command": "python -m bench.fidelity " + " ".join(sys.argv[1:] if argv is None else argv),
                    "machine": machine_text(), "pairs": {}}
    analysed = {}  # name -> (decoded audio, our document, the Echo Nest's document): the folds reuse them
    for name, audio, ref in pairs:
        decoded, analysis, doc, error, wall = ours.run(audio)
        if doc is None:
            result["pairs"][name] = {"error": error}
            continue
        en = json.loads(ref.read_text(encoding="utf-8"))
        if args.loso:
            analysed[name] = (decoded, doc, en)
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        figs = run_scorer(scorer, path, ref)
        if not args.no_jukebox and en.get("sections"):
            figs.update(run_jukebox(jukebox, ref, path, figs["aligned_shift_s"]) or {})
        figs.update(diagnostics(doc, en, figs["aligned_shift_s"]))
        figs["analysis_s"] = round(wall, 2)
        figs["realtime_factor"] = round(doc["track"]["duration"] / wall, 1)
        result["pairs"][name] = figs
        print(f"bench.fidelity: {name} done ({wall:.1f} s)", file=sys.stderr, flush=True)
    result["msd_timbre_sd"] = msd_spreads(eval_dir)
    if args.loso:
        from .fidelity_loso import report as loso_report
        from .fidelity_loso import run as run_loso

        result["loso"] = run_loso(analysed, result["pairs"], ours.models)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(report(result))
    if args.loso:
        print(loso_report(result["loso"], result["pairs"]))
    if args.json:
        args.json.write_text(json.dumps(_jsonable(result), indent=1) + "\n", encoding="utf-8")
    return 0


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return " ".join(f"{x:g}" for x in v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def report(result: dict) -> str:
    names = list(result["pairs"])
    rows = []
    keys = list(TARGETS) + ["loudness_max_offset_db", "jukebox_threshold_ours", "jukebox_threshold_echonest",
                            "aligned_shift_s", "beatF_vs_en", "realtime_factor"]
    for k in keys:
        vals = [result["pairs"][n].get(k) for n in names]
        if all(v is None for v in vals):
            continue
        target, ok = TARGETS.get(k, ("", None))
        marks = [("" if v is None or ok is None else (" ✓" if ok(v) else " ✗")) for v in vals]
        rows.append([k] + [_fmt(v) + m for v, m in zip(vals, marks)] + [target, _fmt(ANCHOR.get(k))])
    text = [f"# Echo Nest fidelity {result['date']}", "", f"Command: `{result['command']}`  ",
            f"Machine: {result['machine']}; {result['wall_s']} s in all.", "",
            _table(["figure"] + names + ["target", "anchor: Spotify 4.0 vs Echo Nest 3.1.3"], rows)]
    if result.get("msd_timbre_sd"):
        text += ["", "Timbre standard deviation per dimension in the Million Song Dataset documents: "
                 + "; ".join(" ".join(f"{x:g}" for x in row) for row in result["msd_timbre_sd"])]
    return "\n".join(text)


if __name__ == "__main__":
    sys.exit(main())
