"""What tells three beats to the bar from four (issue 31): meter cues measured on cached activations.

    python -m bench.meter_cues [--sets asap,devrenders,gtzan,renders] [--set NAME=VALUE ...] [--per-file]

For every file with a known meter the cues below are computed on two beat grids: the beats the analyzer
tracks (``bench.rhythm_cv``'s decoder, default ``RhythmParams``) and the annotated beats.  Each cue gives
a score per meter m in {2, 3, 4}; what is reported is how well the difference score(3) - score(4) tells
the files in three (truth 3) from those in four (truth 4): its ROC AUC per set and fold, and, for the tracked
beats, only over files whose tracked tempo is the truth's (elsewhere the meter in tracked beats is not the
truth's).  The same is then reported for two beats to the bar against four: score(2) - score(4), truth 2
(2/4, 2/2, and 6/8 in dotted beats) against truth 4.

Cues (per beat i of the grid; "comb" = autocorrelation of the z-scored sequence at lags m and 2m, averaged):

* ``hmm``: the meter decoder's own forward log-likelihood per beat for a meter (``analyzer.stages.rhythm.decode_meter``'s
  chains on the mixed evidence, prior included): what decides the meter today.
* ``evidence``, ``bar_net``, ``downbeat_net``: comb of the decoder's mixed per-beat evidence, of the bar
  networks' output alone, of the downbeat network's observation alone.
* ``harmony``: comb of the chord change at each beat (1 - cosine of the beat-synchronous CLP chroma of the beat
  and the one before): where chords change on downbeats, the change recurs once a bar.
* ``bass``: comb of the low-band (43-240 Hz, the first 10 of the bar network's 45 spectral-flux bands) onset
  strength at each beat: bass notes on downbeats.
* ``ssm``: self-similarity of the beat-synchronous chroma m and 2m beats apart (mean cosine): one bar against the
  next.

Then a rule ``meter = argmax_m (L_m + w n c_m)`` (L_m the HMM's log-likelihood of meter m over the n beats,
c_m a cue, w its weight) is chosen on one fold (best meter accuracy over the files of ``--choose-on``'s sets in
that fold, ties to the smaller w) and scored on the other, both directions, with the downbeat F the decoder then
reaches when held to that meter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .rhythm_cv import FOLDS, auc, forced_meter, ours_estimate, prepare, tempo_relation, with_overrides
from .metrics import score

METERS = (2, 3, 4)
CUES = ("hmm", "evidence", "bar_net", "downbeat_net", "harmony", "bass", "ssm")
BASS_BANDS = 10  # the bar network's spectral-flux bands centred 43-237 Hz
WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)


def beat_sync(x: np.ndarray, beat_times: np.ndarray, fps: float) -> np.ndarray:
    """Mean of the frames of `x` (frames, dims) from each beat to the next (the last beat: one median beat long)."""
    frames = np.round(beat_times * fps).astype(int)
    ibi = int(np.median(np.diff(frames))) if len(frames) > 1 else 1
    ends = np.append(frames[1:], frames[-1] + ibi)
    out = np.zeros((len(frames), x.shape[1]))
    for i, (a, b) in enumerate(zip(frames, ends)):
        a, b = np.clip([a, max(b, a + 1)], 0, len(x))
        if b > a:
            out[i] = x[a:b].mean(axis=0)
    return out


def comb(x: np.ndarray, m: int) -> float:
    """Autocorrelation of the z-scored sequence at lags m and 2m (mean of the two): how x recurs every m beats."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 4 * m or x.std() < 1e-9:
        return 0.0
    z = (x - x.mean()) / x.std()
    return float(np.mean([np.mean(z[:-k] * z[k:]) for k in (m, 2 * m)]))


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-9)


def hmm_loglik(obs: np.ndarray, params) -> np.ndarray:
    """Per meter, the forward log-likelihood of the decoder's chain for that meter alone (prior included)."""
    d = np.clip(obs, 1e-4, 1 - 1e-4)
    out = []
    for k, m in enumerate(METERS):
        e = np.where(np.arange(m)[None, :] == 0, np.log(d)[:, None], np.log1p(-d)[:, None])
        alpha = -np.log(m) + e[0]
        for t in range(1, len(d)):
            alpha = np.roll(alpha, 1) + e[t]
        out.append(float(np.logaddexp.reduce(alpha)) + params.meter_log_prior[k])
    return np.array(out)


def cues_on_grid(key: str, c: dict, beats: np.ndarray, params, decoder) -> dict[str, np.ndarray]:
    """Each cue's score per meter (2, 3, 4) on one beat grid, and the decoder's evidence (``obs``)."""
    from analyzer.stages.rhythm import _peak_at, downbeat_observation

    fps = float(c["fps"])
    r = decoder(key, c, params, beats=(beats, np.ones(len(beats))))
    obs = r.downbeat_evidence
    bar = decoder.bar_act(key, beats, c)
    frames = np.round(beats * fps).astype(int)
    down_at = _peak_at(c["downbeat"], frames, radius=params.downbeat_radius_frames)
    beat_at = _peak_at(c["downbeat_beat"] + c["downbeat"], frames, radius=params.downbeat_radius_frames)
    dnet = downbeat_observation(down_at=down_at, beat_at=beat_at, params=params)
    chroma = beat_sync(c["clp"].astype(np.float64), beats, fps)
    chroma = chroma - chroma.mean(axis=1, keepdims=True)
    change = np.append(np.nan, 1.0 - _cos_rows(chroma[1:], chroma[:-1]))
    low = c["percussive"][:, :BASS_BANDS].astype(np.float64).sum(axis=1)
    bass = _peak_at(low, frames, radius=3)
    n = len(beats)
    out = {
        "hmm": hmm_loglik(obs, params) / max(n, 1),
        "evidence": np.array([comb(obs, m) for m in METERS]),
        "bar_net": np.array([comb(bar, m) for m in METERS]),
        "downbeat_net": np.array([comb(dnet, m) for m in METERS]),
        "harmony": np.array([comb(change, m) for m in METERS]),
        "bass": np.array([comb(bass, m) for m in METERS]),
        "ssm": np.array([np.mean([_cos_rows(chroma[:-k], chroma[k:]).mean() for k in (m, 2 * m)]) if n > 2 * m + 2
                         else 0.0 for m in METERS]),
    }
    return out


def measure(items, caches, decoder, params) -> list[dict]:
    """One row per file with a meter: its cues on the tracked and the true beats, the tempo relation, the truth."""
    rows = []
    for item, fold in items:
        t = item.truth
        if t.meter is None or t.beats is None:
            continue
        key, c = f"{item.set}/{item.name}", caches[(item.set, item.name)]
        dur = float(c["duration_s"])
        tracked, _ = decoder.beats(key, c, params)
        r = decoder(key, c, params)
        row = {"set": item.set, "name": item.name, "group": item.group, "fold": fold, "truth": t.meter,
               "meter": r.time_signature, "tempo_rel": tempo_relation(r.tempo_bpm, t.tempo), "item": item}
        if len(tracked) >= 12:
            row["tracked"] = cues_on_grid(key, c, tracked, params, decoder)
        tb = t.beats[(t.beats >= 0) & (t.beats < dur - 0.1)]
        if len(tb) >= 12:
            row["true"] = cues_on_grid(key, c, tb, params, decoder)
        rows.append(row)
    return rows


def separation_table(rows: list[dict], pair: tuple[int, int] = (3, 4)) -> str:
    """Markdown: AUC of score(a) - score(b) for truth a vs truth b (`pair`), per cue, grid, set and fold."""
    a, b = pair
    ia, ib = METERS.index(a), METERS.index(b)
    lines = []
    for grid in ("true", "tracked"):
        head = ["set", "fold", f"n ({a} / {b})", *CUES]
        lines += [f"\nGrid: {grid} beats" + (" (files tracked at the true tempo)" if grid == "tracked" else ""), "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in sorted({r["set"] for r in rows}):
            for fold in (*FOLDS, "all"):
                sel = [r for r in rows if r["set"] == s and fold in ("all", r["fold"]) and r["truth"] in pair
                       and grid in r and (grid == "true" or r["tempo_rel"] == "1")]
                labels = np.array([r["truth"] == a for r in sel])
                if not labels.any() or labels.all():
                    continue
                cells = [f"{auc(np.array([r[grid][k][ia] - r[grid][k][ib] for r in sel]), labels):.2f}" for k in CUES]
                lines.append("| " + " | ".join([s, fold, f"{labels.sum()} / {(~labels).sum()}", *cells]) + " |")
    return "\n".join(lines)


def rule_meter(cues: dict, cue: str, w: float) -> int:
    """argmax over meters of the HMM's per-beat log-likelihood + w x the cue."""
    return METERS[int(np.argmax(cues["hmm"] + w * cues[cue]))]


def _fold_accuracy(rows: list[dict], cue: str, w: float) -> float:
    return float(np.mean([rule_meter(r["tracked"], cue, w) == r["truth"] for r in rows])) if rows else 0.0


def cross_validate(rows: list[dict], caches, decoder, params, choose_sets: tuple[str, ...]) -> str:
    """Rules chosen on one fold (meter accuracy on tracked beats over `choose_sets`, pooled), scored on the other.

    One rule per cue (its weight chosen), and one where the cue is chosen too ("any").  Scored per set: meter
    accuracy, triple-meter files right, and the downbeat F the decoder reaches when held to the rule's meter
    (``rhythm_cv.forced_meter``), each before (the decoder as it is) and after.
    """
    lines = ["| cue | chosen on (w) | scored on | set | n | rule at w=0 = decoder | meter acc: before / after | "
             "triple right: before / after | downbeat F: before / after |", "|---|---|---|---|---|---|---|---|---|"]
    base_db: dict[str, float] = {}
    for cue in (*CUES[1:], "any"):
        for choose, other in (("A", "B"), ("B", "A")):
            pool = [r for r in rows if r["set"] in choose_sets and r["fold"] == choose and "tracked" in r]
            cands = [(k, w) for k in (CUES[1:] if cue == "any" else (cue,)) for w in WEIGHTS]
            best_cue, best_w = max(cands, key=lambda kw: (_fold_accuracy(pool, *kw), -kw[1]))
            for s in sorted({r["set"] for r in rows}):
                sel = [r for r in rows if r["set"] == s and r["fold"] == other and "tracked" in r]
                if not sel:
                    continue
                agree = sum(rule_meter(r["tracked"], best_cue, 0.0) == r["meter"] for r in sel)
                before = np.mean([r["meter"] == r["truth"] for r in sel])
                new = [rule_meter(r["tracked"], best_cue, best_w) for r in sel]
                after = np.mean([m == r["truth"] for m, r in zip(new, sel)])
                tri = [i for i, r in enumerate(sel) if r["truth"] == 3]
                tri_b, tri_a = sum(sel[i]["meter"] == 3 for i in tri), sum(new[i] == 3 for i in tri)
                db_before, db_after = [], []
                for m, r in zip(new, sel):
                    item, c = r["item"], caches[(r["set"], r["name"])]
                    key, dur = f"{r['set']}/{r['name']}", float(c["duration_s"])
                    if key not in base_db:
                        base_db[key] = score(ours_estimate(decoder(key, c, params)), item.truth, dur).get(
                            "downbeat_f", np.nan)
                    if not np.isfinite(base_db[key]):
                        continue
                    db_before.append(base_db[key])
                    db_after.append(base_db[key] if m == r["meter"] else
                                    score(ours_estimate(decoder(key, c, forced_meter(params, m))), item.truth,
                                          dur).get("downbeat_f", 0.0))
                name = cue if cue != "any" else f"any ({best_cue})"
                db = f"{np.mean(db_before):.3f} / {np.mean(db_after):.3f}" if db_before else "–"
                lines.append(f"| {name} | {choose} ({best_w:g}) | {other} | {s} | {len(sel)} | {agree} | "
                             f"{before:.3f} / {after:.3f} | {tri_b} / {tri_a} of {len(tri)} | {db} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the cue separation tables and the cross-validated rules as markdown."""
    from analyzer.stages.rhythm import RhythmParams

    from .run import resolve_eval_dir

    ap = argparse.ArgumentParser(prog="python -m bench.meter_cues", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default="asap,devrenders,gtzan,renders")
    ap.add_argument("--choose-on", default="asap,devrenders,gtzan,renders",
                    help="sets whose fold (pooled) chooses each rule's weight")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="override a RhythmParams field (repeatable)")
    ap.add_argument("--per-file", action="store_true")
    args = ap.parse_args(argv)
    sets = tuple(s for s in args.sets.split(",") if s)
    items, caches, decoder = prepare(resolve_eval_dir(args.eval_dir), sets)
    params = with_overrides(RhythmParams(), args.overrides)
    rows = measure(items, caches, decoder, params)
    print("ROC AUC of score(3) - score(4), truth 3 against truth 4")
    print(separation_table(rows))
    print("\nROC AUC of score(2) - score(4), truth 2 against truth 4 (bars of two beats: 2/4, 2/2, 6/8 in dotted beats)")
    print(separation_table(rows, (2, 4)))
    choose_sets = tuple(x for x in args.choose_on.split(",") if x)
    print(f"\nRule argmax_m (L_m / n + w c_m), w chosen on one fold of {', '.join(choose_sets)} (pooled meter "
          "accuracy, ties to the smaller w), scored on the other\n")
    print(cross_validate(rows, caches, decoder, params, choose_sets))
    if args.per_file:
        print()
        for r in rows:
            cells = " ".join(f"{k}={r['true'][k][1] - r['true'][k][2]:+.3f}/{r['tracked'][k][1] - r['tracked'][k][2]:+.3f}"
                             for k in CUES if "true" in r and "tracked" in r)
            print(f"{r['set']} {r['fold']} {r['name'][:40]:40s} truth {r['truth']} ours {r['meter']} "
                  f"tempo {r['tempo_rel']:5s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
