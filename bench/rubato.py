"""What the beat tracker's tempo model allows, and what loosening it costs (issue 31, rubato).

    python -m bench.rubato [--sets asap,gtzan] [--try 'NAME=VALUE ...' ...]

madmom's DBN (``DBNBeatTrackingProcessor``, which ``analyzer.stages.rhythm.track_beats`` drives) holds the beat
period between ``min_bpm`` and ``max_bpm`` and lets it change only from one beat to the next, with
probability proportional to exp(-lambda |period ratio - 1|) (``transition_lambda``).  This prints, for the
base parameters and each trial, beat F, downbeat F and tempo Acc1 per set and fold (cached activations,
``bench.rhythm_cv``), the same for the ASAP performances with the most rubato (Chopin, Schumann,
Scriabin: ``RUBATO_COMPOSERS``), and how much the annotated beat period itself moves from beat to beat
(median and 90th percentile of |ratio - 1| of consecutive annotated beat periods per file, pooled).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .rhythm_cv import evaluate, parse_trial, prepare, with_overrides

RUBATO_COMPOSERS = ("Chopin", "Schumann", "Scriabin")
FIGURES = ("beat_f", "downbeat_f", "tempo_acc1")


def period_changes(beats: np.ndarray) -> np.ndarray:
    """|ratio - 1| of each annotated beat period to the one before it."""
    ibi = np.diff(np.asarray(beats, dtype=float))
    ibi = ibi[ibi > 0]
    return np.abs(ibi[1:] / ibi[:-1] - 1.0) if len(ibi) > 1 else np.zeros(0)


def transition_cost(change: float, lam: float) -> float:
    """The DBN's relative probability of a beat-to-beat period change of `change` (0.05 = 5 %)."""
    return float(np.exp(-lam * change))


def _group(rec: dict) -> list[str]:
    out = [f"{rec['set']} {rec['fold']}"]
    if rec["set"] == "asap" and rec["name"].split("_")[0] in RUBATO_COMPOSERS:
        out.append(f"asap rubato {rec['fold']}")
    return out


def summary(recs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of each figure per group ('SET FOLD', 'asap rubato FOLD')."""
    groups: dict[str, list[dict]] = {}
    for r in recs:
        for g in _group(r):
            groups.setdefault(g, []).append(r)
    return {g: {f: float(np.mean([r["ours"][f] for r in v if f in r["ours"]])) for f in FIGURES
                if any(f in r["ours"] for r in v)} | {"n": len(v)} for g, v in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    """Print the tempo model, the annotated period changes and each trial's figures as markdown."""
    from analyzer.stages.rhythm import RhythmParams

    from .run import resolve_eval_dir

    ap = argparse.ArgumentParser(prog="python -m bench.rubato", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default="asap,gtzan")
    ap.add_argument("--try", dest="trials", action="append", default=[], metavar="'NAME=VALUE ...'")
    args = ap.parse_args(argv)
    sets = tuple(s for s in args.sets.split(",") if s)
    items, caches, decoder = prepare(resolve_eval_dir(args.eval_dir), sets)
    base = RhythmParams()
    print(f"Tempo model: {base.min_bpm:g}-{base.max_bpm:g} BPM, transition_lambda {base.transition_lambda:g}: "
          + ", ".join(f"a {100 * c:g} % period change costs x{transition_cost(c, base.transition_lambda):.3g}"
                      for c in (0.01, 0.03, 0.05, 0.1)) + " per beat\n")
    print("| set | files | annotated beat-to-beat period change: median / 90th pct | beats outside the tempo range |")
    print("|---|---|---|---|")
    for s in sets:
        for label, sel in ((s, [it for it, _ in items if it.set == s]),
                           (f"{s} rubato", [it for it, _ in items if it.set == s and it.name.split("_")[0] in RUBATO_COMPOSERS])):
            sel = [it for it in sel if it.truth.beats is not None and len(it.truth.beats) > 3]
            if not sel:
                continue
            ch = np.concatenate([period_changes(it.truth.beats) for it in sel])
            bpm = np.concatenate([60.0 / np.diff(it.truth.beats) for it in sel])
            out = float(np.mean((bpm < base.min_bpm) | (bpm > base.max_bpm)))
            print(f"| {label} | {len(sel)} | {np.median(ch):.3f} / {np.quantile(ch, 0.9):.3f} | {100 * out:.1f} % |")
    trials = ["", *args.trials]
    results = []
    for text in trials:
        params = with_overrides(base, parse_trial(text))
        results.append((text or "base", summary(evaluate(items, params, decoder, caches))))
        print(f"bench: rubato {len(results)}/{len(trials)} {text or 'base'}", file=sys.stderr, flush=True)
    groups = list(results[0][1])
    print("\nEach cell: beat F, downbeat F, tempo Acc1 (ours)\n")
    print("| parameters | " + " | ".join(f"{g} (n {results[0][1][g]['n']})" for g in groups) + " |")
    print("|---|" + "---|" * len(groups))
    for name, summ in results:
        cells = [" ".join(f"{summ[g].get(f, np.nan):.3f}" for f in FIGURES) for g in groups]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
