"""How many 3 s patches the taggers need: quality against cost, on two folds of GTZAN (issue 19).

    python -m bench.tag_patches [--eval-dir DIR] [--json OUT.json]

Each GTZAN clip (30 s: 10 patches) is analysed once with every patch; the taggers' outputs per
patch are kept, so the output of any subset of patches is exact (the patches are computed
independently).  For each patch count and placement (``ends``: evenly spread from the first patch
to the last, as the taggers placed them before; ``centres``: the centres of equal parts, so no
intro and outro patch, as `analyzer.stages.tagging.patch_indices` places them now) it prints, per fold (even / odd file index): zero-shot genre accuracy from the tags
(`bench.descriptors`' mapping), same-genre precision@5 of the embedding (leave one out over the
fold), the mean tag probabilities' agreement with all patches (Pearson r, top-5 overlap), and the
share of the analysis the tagging and descriptor stages would take on a 30 s clip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from .run import machine_text, resolve_eval_dir

COUNTS = (1, 2, 3, 4, 5, 6, 8, 10)


def chosen(n: int, k: int, placement: str) -> np.ndarray:
    """Indices of ``k`` of ``n`` patches: ``ends`` spans first to last, ``centres`` the centres of k equal parts."""
    if k >= n:
        return np.arange(n)
    if placement == "ends":
        return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
    from analyzer.stages.tagging import centred_patches

    return centred_patches(n, k)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tag_patches", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    from analyzer.stages import musicnn
    from analyzer.stages.audio import decode
    from analyzer.stages.features import Models
    from analyzer.pipeline import AnalysisConfig, analyze
    from analyzer.stages.tagging import TagParams

    from .coldstart import precision_at_5
    from .descriptors import GENRE_TAGS

    models = Models()
    config = AnalysisConfig(tags=TagParams(seconds_per_patch=3.0))  # every patch: subsets are taken below
    clips = sorted((eval_dir / "gtzan").glob("*.flac"))
    labels, outs, cost = [], [], []
    analyze(decode(clips[0]), models=models, config=config)  # first-call costs are not per-clip costs
    for path in clips:
        a = decode(path)
        t0 = time.perf_counter()
        an = analyze(a, models=models, config=config)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        musicnn.log_mel(a.samples, a.sr, models.mtt.front)
        mel_s = time.perf_counter() - t0
        s = an.seconds_by_stage
        n = len(an.tags.mtt.patch_probabilities)
        cost.append({"total": total, "tags": s["tags"], "mel": mel_s, "descriptors": s.get("descriptors", 0.0),
                     "patches": n, "seconds": a.duration_s})
        labels.append(path.name.split(".")[0])
        outs.append((an.tags.mtt, an.tags.msd))
    idx = np.arange(len(clips))
    folds = {"A (even)": idx[idx % 2 == 0], "B (odd)": idx[idx % 2 == 1]}
    mtt_tags, msd_tags = outs[0][0].tags, outs[0][1].tags
    full = [np.concatenate([m.probabilities, d.probabilities]) for m, d in outs]

    def scores(k: int, placement: str):
        probs, emb = [], []
        for m, d in outs:
            c = chosen(len(m.patch_probabilities), k, placement)
            probs.append((m.patch_probabilities[c].mean(0), d.patch_probabilities[c].mean(0)))
            e = d.patch_embeddings[c].mean(0)
            emb.append(e / max(float(np.linalg.norm(e)), 1e-12))
        return probs, np.array(emb)

    rows = []
    per_patch = np.mean([(c["tags"] - c["mel"]) / c["patches"] for c in cost])
    for placement in ("ends", "centres"):
        for k in COUNTS:
            probs, emb = scores(k, placement)
            pred = []
            for pm, pd in probs:
                pt = {"mtt": dict(zip(mtt_tags, pm)), "msd": dict(zip(msd_tags, pd))}
                sc = {g: max(pt[t].get(tag, 0.0) for t, tag in tags.items()) for g, tags in GENRE_TAGS.items()}
                pred.append(max(sc, key=sc.get))
            row = {"patches": k, "placement": placement}
            for name, f in folds.items():
                known = [i for i in f if labels[i] in GENRE_TAGS]
                row[f"zero_shot {name}"] = float(np.mean([pred[i] == labels[i] for i in known]))
                row[f"p5 {name}"] = precision_at_5(emb[f], [labels[i] for i in f])
                r, overlap = [], []
                for i in f:
                    now = np.concatenate(probs[i])
                    r.append(np.corrcoef(now, full[i])[0, 1])
                    overlap.append(len(set(np.argsort(-now)[:5]) & set(np.argsort(-full[i])[:5])) / 5)
                row[f"r {name}"] = float(np.mean(r))
                row[f"top5 {name}"] = float(np.mean(overlap))
            # the share on a 30 s clip with k patches: the mel and descriptors as measured, the taggers per patch
            shares = []
            for c in cost:
                tags_k = c["mel"] + per_patch * min(k, c["patches"])
                rest = c["total"] - c["tags"] - c["descriptors"]
                shares.append((tags_k + c["descriptors"]) / (rest + tags_k + c["descriptors"]))
            row["share"] = float(np.mean(shares))
            rows.append(row)
    print(f"# bench.tag_patches {dt.date.today()} on {machine_text()}")
    print(f"{len(clips)} GTZAN clips; per patch and tagger pair {1000 * per_patch:.0f} ms; mel "
          f"{1000 * np.mean([c['mel'] for c in cost]):.0f} ms; whole analysis with 10 patches "
          f"{np.mean([c['total'] for c in cost]):.2f} s per clip")
    names = list(folds)
    print("| placement | patches | zero-shot A | zero-shot B | P@5 A | P@5 B | r A | r B | top-5 A | top-5 B | share of analysis |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[f'{m} {n}']:.3f}" for m in ("zero_shot", "p5", "r", "top5") for n in names]
        print(f"| {r['placement']} | {r['patches']} | " + " | ".join(cells) + f" | {100 * r['share']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps({"date": str(dt.date.today()), "machine": machine_text(), "rows": rows,
                                         "cost": cost}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
