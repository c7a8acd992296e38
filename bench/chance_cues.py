"""Where the meter decoder's chance-level correction belongs (issue 31, third round): per-file cues of the
kind of music, on cached activations.

    python -m bench.chance_cues [--sets gtzan,renders,recordings,devrenders,asap] [--weights 0.5,1] [--per-file]

``RhythmParams.meter_chance_weight`` = 1 reads two-beat classical bars as 2 and 4/4 popular music as 2 too
(bench/RESULTS.md, "Beat level (second round)").  Here every file is decoded with the weight 0 (as the
analyzer does) and with each weight of ``--weights``; each file's change of downbeat F is set beside cues of
the kind of music, each computed from what the pipeline already has (no network is run):

* ``pulse``: ``rhythm.pulse_periodicity`` of the beat activation at the tracked beat period;
* ``local_pulse``: ``rhythm.local_pulse_periodicity`` (15 s windows);
* ``clarity``: ``rhythm.metrical_clarity`` of the onset envelope at the tracked beats;
* ``stability``: ``rhythm.harmonic_stability`` of the CLP chroma;
* ``strength``: the median beat activation at the tracked beats (how sure the beat network is);
* ``regularity``: 1 - the median beat-to-beat change of the tracked beat period, |log(ibi[i+1] / ibi[i])|
  (rubato lowers it, but the tracker's tempo model smooths it away);
* ``drift``: ``rhythm.tempo_drift`` of the tracked beats, how far the tempo wanders over the piece (the
  standard deviation of the log median beat period over 10 s windows);
* ``high_flux``: the share of the spectral flux (the bar network's percussive input) in its bands above
  ~5 kHz (cymbals, hi-hats, snares);
* ``tempo_conf``: the tempo confidence (``rhythm.estimate_tempo``: regularity x coverage x clarity).

Reported: the ROC AUC of each cue at telling the files the correction hurts (downbeat F falls by more than
0.01) from those it helps (rises by more than 0.01), per fold, all sets pooled (a high AUC: the cue is high
where the correction hurts); then rules "the weight where cue < threshold, 0 elsewhere", the threshold chosen on
one fold (the best ASAP downbeat F among thresholds with which no other set of that fold loses more than 0.005
downbeat F or meter accuracy; ties to the threshold that corrects fewest files) and scored on the other: it passes
where ASAP's downbeat F rises by more than 0.005 and no set (ASAP included) loses more than 0.005 of beat F,
downbeat F or meter accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .metrics import score
from .rhythm_cv import FOLDS, auc, ours_estimate, prepare, with_overrides

CUES = ("pulse", "local_pulse", "clarity", "stability", "strength", "regularity", "drift", "high_flux", "tempo_conf")
FIGS = ("beat_f", "downbeat_f", "meter_acc")
HIGH_FLUX_BAND = 33  # of the bar network's 45 log-spaced flux bands: 33 and up lie above ~5 kHz


def file_cues(c: dict, times: np.ndarray, strength: np.ndarray, rhythm) -> dict[str, float]:
    """The cues of one file (see the module docstring) from its cache, tracked beats and decoded rhythm."""
    from analyzer.stages.features import MADMOM_FPS
    from analyzer.stages.rhythm import (
        harmonic_stability,
        local_pulse_periodicity,
        metrical_clarity,
        pulse_periodicity,
        tempo_drift,
    )

    fps = float(c["fps"])
    act = c["beat"]
    out = {"stability": harmonic_stability(chroma=c["clp"].astype(np.float32), fps=MADMOM_FPS)}
    flux = c["percussive"].astype(np.float64)
    total = float(flux.sum())
    out["high_flux"] = float(flux[:, HIGH_FLUX_BAND:].sum()) / total if total > 0 else 0.0
    if len(times) < 4:
        return {**{k: np.nan for k in CUES}, **out}
    ibi = np.diff(times)
    out.update(
        pulse=pulse_periodicity(act, times, fps),
        local_pulse=local_pulse_periodicity(act, times, fps),
        clarity=metrical_clarity(beat_times=times, onset_env=c["onset_env"], onset_fps=float(c["onset_fps"])),
        strength=float(np.median(strength)),
        regularity=1.0 - float(np.median(np.abs(np.diff(np.log(ibi))))),
        drift=tempo_drift(times),
        tempo_conf=float(rhythm.tempo_confidence),
    )
    return out


def measure(items, caches, decoder, params, weights: tuple[float, ...]) -> list[dict]:
    """One row per file: set, fold, cues, and per weight (0 first) its figures and meter."""
    import dataclasses

    rows = []
    for item, fold in items:
        key, c = f"{item.set}/{item.name}", caches[(item.set, item.name)]
        dur = float(c["duration_s"])
        times, strength = decoder.beats(key, c, params)
        row = {"set": item.set, "name": item.name, "fold": fold, "truth_meter": item.truth.meter,
               "group": item.group, "by_w": {}}
        for w in (0.0, *weights):
            r = decoder(key, c, dataclasses.replace(params, meter_chance_weight=w))
            row["by_w"][w] = {**score(ours_estimate(r), item.truth, dur), "meter": r.time_signature}
            if w == 0.0:
                row["cues"] = file_cues(c, times, strength, r)
        rows.append(row)
    return rows


def _mean(rows, w, fig, mask=None):
    v = [r["by_w"][w if (mask is None or mask(r)) else 0.0].get(fig) for r in rows]
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def separation(rows: list[dict], w: float, margin: float = 0.01) -> str:
    """Markdown: per fold, AUC of each cue at telling files the correction hurts from those it helps."""
    lines = ["| fold | hurt / helped | " + " | ".join(CUES) + " |", "|---|---|" + "---|" * len(CUES)]
    for fold in (*FOLDS, "all"):
        sel = [r for r in rows if fold in ("all", r["fold"]) and "downbeat_f" in r["by_w"][0.0]]
        d = np.array([r["by_w"][w]["downbeat_f"] - r["by_w"][0.0]["downbeat_f"] for r in sel])
        keep = np.abs(d) > margin
        hurt = d[keep] < 0
        cells = []
        for k in CUES:
            x = np.array([r["cues"][k] for r in sel])[keep]
            ok = np.isfinite(x)
            cells.append(f"{auc(x[ok], hurt[ok]):.2f}")
        lines.append(f"| {fold} | {hurt.sum()} / {(~hurt).sum()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kind_separation(rows: list[dict], a: str = "asap", b: str = "gtzan") -> str:
    """Markdown: per fold, AUC of each cue at telling set `a`'s files (high) from set `b`'s: the kind of music."""
    lines = [f"| fold | {a} / {b} | " + " | ".join(CUES) + " |", "|---|---|" + "---|" * len(CUES)]
    for fold in (*FOLDS, "all"):
        sel = [r for r in rows if fold in ("all", r["fold"]) and r["set"] in (a, b)]
        labels = np.array([r["set"] == a for r in sel])
        cells = []
        for k in CUES:
            x = np.array([r["cues"][k] for r in sel])
            ok = np.isfinite(x)
            cells.append(f"{auc(x[ok], labels[ok]):.2f}")
        lines.append(f"| {fold} | {labels.sum()} / {(~labels).sum()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cue_ranges(rows: list[dict], w: float, margin: float = 0.01) -> str:
    """Markdown: per set, each cue's range over the files the correction hurts and over those it helps."""
    lines = ["| set | files | " + " | ".join(CUES) + " |", "|---|---|" + "---|" * len(CUES)]
    for s in sorted({r["set"] for r in rows}):
        for label, test in (("hurt", lambda d: d < -margin), ("helped", lambda d: d > margin),
                            ("unchanged", lambda d: abs(d) <= margin)):
            sel = [r for r in rows if r["set"] == s and "downbeat_f" in r["by_w"][0.0]
                   and test(r["by_w"][w]["downbeat_f"] - r["by_w"][0.0]["downbeat_f"])]
            if not sel:
                continue
            cells = []
            for k in CUES:
                x = np.array([r["cues"][k] for r in sel])
                x = x[np.isfinite(x)]
                cells.append(f"{x.min():.2f}-{np.median(x):.2f}-{x.max():.2f}" if x.size else "–")
            lines.append(f"| {s} | {label} {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gated(rows, w, cue, thr, direction):
    """The mask: files where the correction applies (cue below the threshold, or above with direction -1)."""
    def mask(r):
        x = r["cues"][cue]
        return bool(np.isfinite(x) and (x < thr if direction > 0 else x > thr))
    return mask


def fold_changes(rows, fold, w, mask) -> dict:
    """Per set of the fold: change of each figure with the correction where `mask`, and triple files in 3."""
    out = {}
    for s in sorted({r["set"] for r in rows}):
        sel = [r for r in rows if r["set"] == s and r["fold"] == fold]
        if not sel:
            continue
        out[s] = {f: (a - b) for f in FIGS if (b := _mean(sel, 0.0, f)) is not None
                  and (a := _mean(sel, w, f, mask)) is not None}
    return out


def triple_in_three(rows, w, mask) -> tuple[int, int]:
    tri = [r for r in rows if r["set"] == "asap" and r["truth_meter"] == 3]
    return sum(r["by_w"][w if mask(r) else 0.0]["meter"] == 3 for r in tri), len(tri)


def cross_validate(rows: list[dict], w: float, tolerance: float = 0.005) -> str:
    """Markdown: per cue and direction, the threshold chosen on each fold and its changes on the other."""
    lines = ["| cue | chosen on | threshold | files corrected (other fold) | " +
             " | ".join(f"{s} db / meter" for s in sorted({r['set'] for r in rows})) + " | passes |",
             "|---|---|---|---|" + "---|" * (len({r['set'] for r in rows}) + 1)]
    for cue in CUES:
        for direction in (+1, -1):
            vals = np.unique(np.round([r["cues"][cue] for r in rows if np.isfinite(r["cues"][cue])], 4))
            cands = np.concatenate([(vals[:-1] + vals[1:]) / 2, [vals[-1] + 1 if direction > 0 else vals[0] - 1]])
            for choose, other in (("A", "B"), ("B", "A")):
                best = None
                for thr in cands:
                    mask = gated(rows, w, cue, thr, direction)
                    ch = fold_changes(rows, choose, w, mask)
                    worst = min((v for s, d in ch.items() if s != "asap" for k, v in d.items()
                                 if k in ("downbeat_f", "meter_acc")), default=0.0)
                    gain = ch.get("asap", {}).get("downbeat_f", 0.0)
                    n = sum(mask(r) for r in rows if r["fold"] == choose)
                    if worst >= -tolerance and (best is None or (gain, -n) > best[0]):
                        best = ((gain, -n), thr)
                if best is None or best[0][0] <= tolerance:
                    lines.append(f"| {cue} {'<' if direction > 0 else '>'} | {choose} | none helps ASAP | | |")
                    continue
                thr = best[1]
                mask = gated(rows, w, cue, thr, direction)
                ch = fold_changes(rows, other, w, mask)
                n = sum(mask(r) for r in rows if r["fold"] == other)
                ok = ch.get("asap", {}).get("downbeat_f", 0) > tolerance and all(
                    v >= -tolerance for s, d in ch.items() for k, v in d.items() if k in ("downbeat_f", "beat_f")
                    ) and all(d.get("meter_acc", 0) >= -tolerance for d in ch.values())
                cells = [f"{ch[s].get('downbeat_f', 0):+.3f} / {ch[s].get('meter_acc', 0):+.3f}" if s in ch else "·"
                         for s in sorted({r["set"] for r in rows})]
                lines.append(f"| {cue} {'<' if direction > 0 else '>'} | {choose} | {thr:.3f} | {n} | "
                             + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the separation tables and the cross-validated gates as markdown."""
    from analyzer.stages.rhythm import RhythmParams

    from .run import resolve_eval_dir

    ap = argparse.ArgumentParser(prog="python -m bench.chance_cues", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default="gtzan,renders,recordings,devrenders,asap")
    ap.add_argument("--weights", default="1")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--per-file", action="store_true")
    args = ap.parse_args(argv)
    sets = tuple(s for s in args.sets.split(",") if s)
    weights = tuple(float(x) for x in args.weights.split(","))
    items, caches, decoder = prepare(resolve_eval_dir(args.eval_dir), sets)
    params = with_overrides(RhythmParams(), args.overrides)
    rows = measure(items, caches, decoder, params, weights)
    print("AUC of each cue, ASAP's files (high) against GTZAN's: how well it tells the kind of music\n")
    print(kind_separation(rows))
    for w in weights:
        print(f"\n## chance weight {w:g}\n\nAUC of each cue, files the correction hurts (downbeat F -0.01 or "
              "more) against those it helps (+0.01 or more); high = the cue is high where it hurts\n")
        print(separation(rows, w))
        print("\nCue ranges (min-median-max) per set\n")
        print(cue_ranges(rows, w))
        print("\nGate: the correction where cue < (or >) threshold; chosen on one fold, scored on the other "
              "(change of downbeat F / meter accuracy per set)\n")
        print(cross_validate(rows, w))
    if args.per_file:
        print()
        for r in rows:
            d = {w: r["by_w"][w].get("downbeat_f", np.nan) for w in r["by_w"]}
            print(f"{r['set']:10s} {r['fold']} {r['name'][:38]:38s} meter {r['truth_meter']} "
                  + " ".join(f"w{w:g}:{r['by_w'][w]['meter']}/{d[w]:.2f}" for w in r["by_w"]) + " "
                  + " ".join(f"{k}={v:.2f}" for k, v in r["cues"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
