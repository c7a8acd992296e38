"""How many members of madmom's ensembles the analyzer needs: accuracy on both dev folds against speed.

    python -m bench.ensemble [--sets gtzan,renders,recordings] [--configs "8,8,8;4,4,4;2,2,2;1,1,1"]
                             [--json bench/ensemble.json]

madmom runs each of its beat, downbeat and onset networks as an ensemble of 8 (their outputs
averaged); the networks are most of the analysis time.  Each configuration (beat, downbeat, onset
members) runs the whole analyzer, as a user runs it (`bench.run.Ours`), on every file of the chosen
sets, in one process, one after the other, so the timings compare.  Figures are reported per set on
both folds (`bench.truth.split_items`: even index = dev, odd = heldout) beside the default (8,8,8),
with the change against it; a configuration keeps the default's accuracy when no figure of any set
and fold drops by more than the tolerance (issue 18: 0.005).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .run import Ours, aggregate, machine_text, resolve_eval_dir, run_item, warm_up
from .truth import load_set, split_items

FIGURES = ("beat_f", "downbeat_f", "meter_acc", "tempo_acc1", "tempo_acc2", "onset_f", "key_weighted")
DEFAULT_CONFIGS = "8,8,8;4,4,4;2,2,2;1,1,1;2,4,2;4,8,4"
TOLERANCE = 0.005
FOLDS = ("dev", "heldout")


def run_config(ensemble, items_by_set: dict) -> dict:
    """Every file of every set analysed with ``ensemble``: per set and fold, the figures and the speed.

    Parameters
    ----------
    ensemble : analyzer.stages.features.EnsembleSize
        The members to run.
    items_by_set : dict
        Set name -> list of `bench.truth.Item`.

    Returns
    -------
    dict
        ``{"sets": {set: {fold: {figure: mean}}}, "s_per_30s": ..., "realtime": ...}``; speed is the
        whole analysis (decode to validated document) over all files.
    """
    ours = Ours(ensemble)
    first = next(iter(items_by_set.values()))[0]
    warm_up(first, ours, None)
    out: dict = {"sets": {}}
    wall = audio = 0.0
    for name, items in items_by_set.items():
        records = {it.name: run_item(it, ours, None) for it in items}
        wall += sum(r["ours"]["wall_s"] for r in records.values())
        audio += sum(r["duration_s"] for r in records.values())
        out["sets"][name] = {}
        for fold in FOLDS:
            recs = [records[it.name] for it in split_items(items, fold)]
            figs = aggregate(recs)["ours"]["figures"]
            out["sets"][name][fold] = {k: figs[k]["mean"] for k in FIGURES if k in figs}
    out["s_per_30s"] = wall / audio * 30.0
    out["realtime"] = audio / wall
    return out


def interleaved_speed(configs: list[str], paths: list[Path], rounds: int = 2) -> dict[str, float]:
    """Seconds of analysis per 30 s of audio for each configuration, timed in turn on each file.

    Every configuration's networks are loaded at once and the files are analysed config after
    config, file after file, ``rounds`` times: a load that comes and goes on the machine falls on
    all of them alike, which the per-configuration passes of `run_config` cannot promise.  The
    median over files and rounds of (analysis seconds / audio seconds) x 30.
    """
    import numpy as np

    from analyzer.stages.audio import decode
    from analyzer.stages.features import EnsembleSize, Models
    from analyzer.pipeline import analyze

    models = {c: Models(EnsembleSize.parse(c)) for c in configs}
    audios = [decode(p) for p in paths]
    for c in configs:  # first calls (imports, JIT) are not timed
        analyze(audios[0], models=models[c])
    per: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(rounds):
        for audio in audios:
            for c in configs:
                t0 = time.perf_counter()
                analyze(audio, models=models[c])
                per[c].append((time.perf_counter() - t0) / audio.duration_s * 30.0)
    return {c: float(np.median(v)) for c, v in per.items()}


def _figures_of(ref: dict, set_name: str) -> list[str]:
    return [f for f in FIGURES if any(f in ref["sets"][set_name][fold] for fold in FOLDS)]


def report(results: dict[str, dict], base: str) -> str:
    """A markdown table per set: each configuration's figures on both folds, the change against ``base``."""
    lines = []
    ref = results[base]
    for set_name in ref["sets"]:
        names = _figures_of(ref, set_name)
        lines += [f"### {set_name}", "", "| members (beat, downbeat, onset) | s per 30 s (interleaved) | "
                  "s per 30 s (pass) | " + " | ".join(f"{f} dev / heldout" for f in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for cfg, res in results.items():
            cells = []
            for f in names:
                vals = [res["sets"][set_name][fold].get(f) for fold in FOLDS]
                base_vals = [ref["sets"][set_name][fold].get(f) for fold in FOLDS]
                text = " / ".join("–" if v is None else f"{v:.3f}" for v in vals)
                if cfg != base:
                    deltas = [v - b for v, b in zip(vals, base_vals) if v is not None and b is not None]
                    text += " (" + " / ".join(f"{d:+.3f}" for d in deltas) + ")"
                cells.append(text)
            fast = res.get("interleaved_s_per_30s")
            lines.append(f"| {cfg} | {'–' if fast is None else f'{fast:.2f}'} | {res['s_per_30s']:.2f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Configurations within {TOLERANCE} of {base} on every figure, set and fold: "
                 + (", ".join(c for c in results if c != base and holds(results[c], ref)) or "none"))
    return "\n".join(lines)


def holds(res: dict, ref: dict, tolerance: float = TOLERANCE) -> bool:
    """No figure of any set and fold lower than the reference's by more than ``tolerance``."""
    for set_name, folds in ref["sets"].items():
        for fold, figs in folds.items():
            for f, v in figs.items():
                got = res["sets"][set_name][fold].get(f)
                if got is not None and got < v - tolerance:
                    return False
    return True


def main(argv: list[str] | None = None) -> int:
    from analyzer.stages.features import EnsembleSize

    p = argparse.ArgumentParser(prog="python -m bench.ensemble", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=None)
    p.add_argument("--sets", default="gtzan,renders,recordings")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated 'beat,downbeat,onset' member counts; "
                   "the first is the reference")
    p.add_argument("--limit", type=int, default=0, help="first N files of each set only (smoke tests)")
    p.add_argument("--speed-files", type=int, default=6, help="GTZAN clips for the interleaved timing (0: none)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--from-json", type=Path, default=None,
                   help="reuse the accuracy figures of an earlier --json run; time the configurations only")
    args = p.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    if not eval_dir.is_dir():
        print(f"bench.ensemble: eval corpus not found at {eval_dir}; skipping", file=sys.stderr)
        return 2
    items_by_set = {}
    for s in (x.strip() for x in args.sets.split(",") if x.strip()):
        items = load_set(s, eval_dir)
        items_by_set[s] = items[: args.limit] if args.limit else items
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    t0 = time.perf_counter()
    if args.from_json:
        results = {c: r for c, r in json.loads(args.from_json.read_text())["configs"].items() if c in configs}
        configs = [c for c in configs if c in results]
    else:
        results = {}
        for cfg in configs:
            print(f"bench.ensemble: {cfg}", file=sys.stderr, flush=True)
            results[cfg] = run_config(EnsembleSize.parse(cfg), items_by_set)
            print(f"bench.ensemble: {cfg}: {results[cfg]['s_per_30s']:.2f} s per 30 s", file=sys.stderr, flush=True)
    if args.speed_files:
        clips = sorted((eval_dir / "gtzan").glob("*.flac"))
        clips = clips[:: max(1, len(clips) // args.speed_files)][: args.speed_files]
        for cfg, s_per_30 in interleaved_speed(configs, clips).items():
            results[cfg]["interleaved_s_per_30s"] = s_per_30
    text = (f"Run {time.strftime('%Y-%m-%d')} on {machine_text()}; {time.perf_counter() - t0:.0f} s in all.\n\n"
            + report(results, configs[0]))
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"configs": results, "command": "python -m bench.ensemble "
                                         + " ".join(sys.argv[1:] if argv is None else argv)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
