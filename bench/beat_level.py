"""Which beat level? Choosing the tempo octave of the tracked beats from the networks' evidence (issue 31).

    python -m bench.beat_level [--sets gtzan,renders,devrenders,asap] [--per-file]

On ASAP's human-timed piano only 16 of 40 excerpts are tracked at the annotated beat (``bench.rhythm_cv
--diagnose``); given the annotated beats the meter decoding reaches twice the downbeat F.  This bench asks
whether the evidence the networks give can choose the level after tracking.  For every file (the cache and
decoder of ``bench.rhythm_cv``, default ``RhythmParams``) the tracked beats give four candidate levels: the
tracked beats (``t``), every other beat at either phase (``h0``, ``h1``), and the beats with one interpolated
halfway between each pair (``d``).  Each candidate is decoded as the analyzer decodes beats (the bar networks
run on the candidate's own beats) and scored against the annotations.

Rules (each a definition plus one weight ``w``):

* ``argmax cue + w [t]``: the candidate with the highest cue, the tracked beats getting ``w`` more, over the
  halves (``t h0 h1``), the doubling (``t d``) or all four.  Cues per candidate: ``meter_conf``, the decoder's
  meter confidence (posterior x downbeat contrast); ``bar_net``, ``downbeat_net``, ``evidence``: the highest
  `meter_periodicity` (m = 2, 3, 4) of the bar networks' output, of the downbeat network's evidence and of
  their mix at that level.
* ``hmm 6/8``: the meter decoder also reads bars of 6 and 8 tracked beats (3 and 4 beats at half the tracked
  rate), their prior that of 3 and 4 plus ``w`` (a log prior); where its path is mostly in 6 or 8, every other
  beat is kept at the phase of most of its downbeats.
* ``periodicity 6/8``: every other beat is kept (the phase as above) where the downbeat network's evidence
  recurs more strongly every 6 or 8 tracked beats than every 2, 3 or 4 (`meter_periodicity`), by more than ``w``.

Two-fold cross-validation as everywhere (files sorted by name, even = A, odd = B): ``w`` is chosen on one fold
(the best ASAP downbeat F among the weights with which no set of that fold loses more than 0.005 in beat F or
downbeat F; keeping the tracked beats is always allowed) and scored on the other.  The oracle (the candidate
with the best beat F, or downbeat F, per file) says what a perfect choice would give.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .metrics import score
from .rhythm_cv import FOLDS, ours_estimate, prepare

CANDIDATES = ("t", "h0", "h1", "d")
CUES = ("meter_conf", "bar_net", "downbeat_net", "evidence")
CANDIDATE_SETS = {"halves": ("t", "h0", "h1"), "double": ("t", "d"), "all": CANDIDATES}
PRIOR_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
HMM_LOG_PRIORS = (0.0, -5.0, -10.0, -20.0, -40.0, -80.0)
PERIODICITY_MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
TOLERANCE = 0.005
SETS = ("gtzan", "renders", "devrenders", "asap")
FIGURES = ("beat_f", "downbeat_f")


def candidates(times: np.ndarray) -> dict[str, np.ndarray]:
    """The candidate beat levels of one file's tracked beats (see the module's docstring)."""
    mid = 0.5 * (times[:-1] + times[1:])
    return {"t": times, "h0": times[0::2], "h1": times[1::2], "d": np.sort(np.concatenate([times, mid]))}


def best_of_periodicity(x: np.ndarray, meters: tuple[int, ...] = (2, 3, 4)) -> float:
    """The highest `meter_periodicity` of `x` over `meters` (finite values only)."""
    from analyzer.stages.rhythm import meter_periodicity

    x = np.asarray(x, dtype=float)
    return max(meter_periodicity(x[np.isfinite(x)], m) for m in meters)


def halving_phase(positions: np.ndarray) -> int:
    """0 or 1: the parity of most of the decoded downbeats (bar position 1)."""
    return int(np.bincount(np.flatnonzero(positions == 1) % 2, minlength=2).argmax())


def file_record(item, fold: str, c: dict, decoder, params) -> dict | None:
    """Per candidate level: the figures and the cues; and what the two 6/8 rules need."""
    from analyzer.stages.rhythm import METERS, _peak_at, decode_meter, meter_bonus, meter_periodicity

    key = f"{item.set}/{item.name}"
    times, _ = decoder.beats(key, c, params)
    if len(times) < 16:
        return None
    dur, fps = float(c["duration_s"]), float(c["fps"])
    rec = {"set": item.set, "name": item.name, "fold": fold, "level": {}}
    for lab, beats in candidates(times).items():
        strength = _peak_at(c["beat"], np.round(beats * fps).astype(int))
        r = decoder(key, c, params, beats=(beats, strength))
        bar = decoder.bar_act(key, beats, c)
        rec["level"][lab] = {**score(ours_estimate(r), item.truth, dur), "meter_conf": r.time_signature_confidence,
                             "bar_net": best_of_periodicity(bar),
                             "downbeat_net": best_of_periodicity(r.downbeat_net_evidence),
                             "evidence": best_of_periodicity(r.downbeat_evidence)}
    # the tracked level read with bars of 6 and 8 beats beside 2, 3, 4
    r = decoder(key, c, params)
    obs, net = r.downbeat_evidence, r.downbeat_net_evidence
    meters = (*METERS, 6, 8)
    bonus = meter_bonus(net, params, meters)
    rec["hmm"] = {}
    for h in HMM_LOG_PRIORS:
        prior = (*params.meter_log_prior, *(params.meter_log_prior[METERS.index(m // 2)] + h for m in (6, 8)))
        positions, meter, _, _ = decode_meter(down_at_beats=obs, params=params, meters=meters, meter_log_prior=prior,
                                              meter_bonus=bonus)
        rec["hmm"][h] = f"h{halving_phase(positions)}" if meter in (6, 8) else "t"
    per = {m: meter_periodicity(net, m) for m in meters}
    positions, *_ = decode_meter(down_at_beats=obs, params=params, meters=(6, 8), meter_log_prior=(0.0, 0.0),
                                 meter_bonus=meter_bonus(net, params, (6, 8)))
    rec["periodicity"] = {"excess": max(per[6], per[8]) - max(per[2], per[3], per[4]),
                          "phase": f"h{halving_phase(positions)}"}
    return rec


def rule_choices(recs: list[dict]) -> dict[tuple[str, float], list[str]]:
    """Every rule and weight -> the chosen level of each record."""
    out = {}
    for cue in CUES:
        for name, cands in CANDIDATE_SETS.items():
            for w in PRIOR_WEIGHTS:
                out[(f"{cue} ({name})", w)] = [
                    max(cands, key=lambda k: r["level"][k][cue] + (w if k == "t" else 0.0)) for r in recs]
    for h in HMM_LOG_PRIORS:
        out[("hmm 6/8", h)] = [r["hmm"][h] for r in recs]
    for margin in PERIODICITY_MARGINS:
        out[("periodicity 6/8", margin)] = [r["periodicity"]["phase"] if r["periodicity"]["excess"] > margin else "t"
                                            for r in recs]
    for f in FIGURES:  # not rules: what a perfect choice among the four levels would give
        out[(f"oracle (best {f})", 0.0)] = [max(CANDIDATES, key=lambda k: r["level"][k].get(f, -1)) for r in recs]
    return out


def changes(recs: list[dict], chosen: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (set, fold): the change of each figure from the tracked beats to the chosen levels."""
    out = {}
    for s in SETS:
        for fold in FOLDS:
            idx = [i for i, r in enumerate(recs) if r["set"] == s and r["fold"] == fold]
            d = {}
            for f in FIGURES:
                v = [(recs[i]["level"][chosen[i]][f], recs[i]["level"]["t"][f])
                     for i in idx if f in recs[i]["level"]["t"]]
                if v:
                    d[f] = float(np.mean([a - b for a, b in v]))
            if d:
                out[(s, fold)] = d
    return out


def allowed(delta: dict, fold: str) -> bool:
    """No set of `fold` loses more than TOLERANCE in any figure."""
    return all(v >= -TOLERANCE for (s, f), d in delta.items() if f == fold for v in d.values())


def cross_validate(choices: dict, recs: list[dict]) -> list[tuple[str, str, float, dict]]:
    """Per rule and fold to choose on: the chosen weight and the changes it gives on the other fold."""
    rules = [name for name in dict.fromkeys(n for n, _ in choices) if not name.startswith("oracle")]
    out = []
    for name in rules:
        weights = [w for n, w in choices if n == name]
        deltas = {w: changes(recs, choices[(name, w)]) for w in weights}
        for fold, other in (("A", "B"), ("B", "A")):
            ok = [w for w in weights if allowed(deltas[w], fold)]
            best = max(ok, key=lambda w: deltas[w].get(("asap", fold), {}).get("downbeat_f", 0.0), default=None)
            gain = deltas[best].get(("asap", fold), {}).get("downbeat_f", 0.0) if best is not None else 0.0
            if best is None or gain <= TOLERANCE:
                out.append((name, fold, float("nan"), {}))  # keep the tracked beats: nothing to score
            else:
                out.append((name, fold, best, {k: v for k, v in deltas[best].items() if k[1] == other}))
    return out


def sweep_table(choices: dict, recs: list[dict]) -> str:
    """Markdown: per rule and weight, the change of beat F and downbeat F per set and fold."""
    cols = [(s, f) for s in SETS for f in FOLDS]
    lines = ["| rule | w | " + " | ".join(f"{s} {f}" for s, f in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for (name, w), chosen in choices.items():
        d = changes(recs, chosen)
        cells = [" ".join(f"{d[c][f]:+.3f}" if f in d.get(c, {}) else "·" for f in FIGURES) for c in cols]
        lines.append(f"| {name} | {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cv_table(cv: list) -> str:
    """Markdown: per rule, the weight chosen on each fold and the changes it gives on the other."""
    lines = ["| rule | chosen on | w | scored on | " + " | ".join(SETS) + " |",
             "|---|---|---|---|" + "---|" * len(SETS)]
    for name, fold, w, d in cv:
        other = "B" if fold == "A" else "A"
        if not d:
            zeros = " | ".join("0" for _ in SETS)
            lines.append(f"| {name} | {fold} | keep the tracked beats | {other} | {zeros} |")
            continue
        cells = [" ".join(f"{d[(s, other)][f]:+.3f}" for f in FIGURES) if (s, other) in d else "·" for s in SETS]
        lines.append(f"| {name} | {fold} | {w:g} | {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the sweep and the cross-validated choice of every rule as markdown; returns the exit code."""
    from pathlib import Path

    from analyzer.stages.rhythm import RhythmParams

    from .run import resolve_eval_dir

    ap = argparse.ArgumentParser(prog="python -m bench.beat_level", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--per-file", action="store_true", help="also list every file's figures per level")
    args = ap.parse_args(argv)
    sets = tuple(s for s in args.sets.split(",") if s)
    items, caches, decoder = prepare(resolve_eval_dir(args.eval_dir), sets)
    params = RhythmParams()
    recs = [rec for item, fold in items
            if (rec := file_record(item, fold, caches[(item.set, item.name)], decoder, params)) is not None]
    choices = rule_choices(recs)
    print("Each cell: change of beat F, downbeat F from the tracked beats to the chosen level (mean over the files "
          "with at least 16 tracked beats).\n")
    print(sweep_table(choices, recs))
    print("\nTwo-fold cross-validation: w chosen on one fold, scored on the other\n")
    print(cv_table(cross_validate(choices, recs)))
    if args.per_file:
        print()
        for r in recs:
            print(f"{r['set']:10s} {r['fold']} {r['name']:45s} "
                  + " ".join(f"{k}: F {v.get('beat_f', np.nan):.2f} dF {v.get('downbeat_f', np.nan):.2f}"
                             for k, v in r["level"].items())
                  + f" | hmm@0 {r['hmm'][0.0]} periodicity excess {r['periodicity']['excess']:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
