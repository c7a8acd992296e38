"""Recommender bench on HetRec Last.fm 2k: baselines and the fused playlist, one run.

    python -m bench.recsys [--seed 0]

A per-user 80/20 split of the plays in ../shared/eval/recsys/lastfm-2k (listeners with at
least 10 artists; their tag events on held-out artists are dropped too, as the hidden half
was made).  Every model is fitted on the 80%; the fusion weights are tuned on a further
90/10 split of the 80% only.  NDCG@10 (binary relevance) over the whole catalog and over
artists with at least 5 listeners, catalog coverage@10, novelty (mean self-information of
the recommended artists, bits), fit and playlist times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recommender.data import read_hetrec
from recommender.dataset import Dataset
from recommender.evaluate import ndcg_at_k, split_per_user
from recommender.fit import fit
from recommender.model import FitParams, PlaylistParams
from recommender.models import ALS, EASE, ItemKNN, Popularity


def novelty(top: np.ndarray, listeners: np.ndarray, n_users: int) -> float:
    p = np.maximum(listeners[top], 1) / n_users
    return float(np.mean(-np.log2(p)))


def tuned_als(train_ds, seed):
    """The ALS baseline gets the same validation-tuned setting as the fused model's CF part."""
    from dataclasses import replace

    from recommender.evaluate import drop_pairs, held_out_matrix
    from recommender.model import ALS_GRID

    train, val = split_per_user(train_ds.plays, share=0.1, min_items=10, seed=seed + 1)
    rows = np.array([u for u, v in enumerate(val) if len(v)])
    heard = ((train + drop_pairs(train_ds.user_tags, held_out_matrix(val, train.shape))) > 0).tocsr()[rows]
    best = max(ALS_GRID, key=lambda p: ndcg_at_k((m := ALS(replace(p, seed=seed)).fit(train)).scores(m.user_factors[rows]),
                                                   heard, [val[u] for u in rows])[0])
    return replace(best, seed=seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("ANALYZER_EVAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "eval"))
    ap.add_argument("--eval-dir", type=Path, default=default)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--variants", default="0.1:1.8,0:0,0.1:0,0.1:1.5,0.1:2.0,0.3:1.8",
                    help="fresh share:spread pairs; the first is the CLI's default")
    ap.add_argument("--ann-path", action="store_true", help="also measure the large-catalog path (hnswlib "
                    "candidates, no EASE) on this catalog")
    ap.add_argument("--spark", action="store_true", help="also train the tuned ALS with Spark MLlib (local mode)")
    ap.add_argument("--skip-ease-baseline", action="store_true", help="(for quick runs) EASE on the whole catalog takes minutes")
    args = ap.parse_args(argv)
    folder = args.eval_dir / "recsys" / "lastfm-2k"
    if not folder.is_dir():
        print(f"bench: no HetRec data at {folder}", file=sys.stderr)
        return 2
    ds = Dataset.from_hetrec(read_hetrec(folder))
    x = ds.plays
    train, test = split_per_user(x, share=0.2, min_items=10, seed=args.seed)
    # the hidden half of HetRec has no tag events on its held-out pairs: drop ours the same way
    held = sp.csr_matrix((np.ones(sum(len(t) for t in test)), (np.repeat(np.arange(x.shape[0]), [len(t) for t in test]),
                         np.concatenate(test))), shape=x.shape)
    user_tags = ds.user_tags - ds.user_tags.multiply(held > 0)
    user_tags.eliminate_zeros()
    train_ds = ds.with_plays(train, user_tags=user_tags)

    listeners = np.asarray((train > 0).sum(axis=0)).ravel()
    in_catalog = listeners >= 1
    pop5 = listeners >= 5
    n_users = x.shape[0]
    rows = []

    def evaluate(name: str, scores: np.ndarray, fit_s: float, score_s: float) -> None:
        for scope, allowed in (("whole catalog", in_catalog), ("artists with >= 5 listeners", pop5)):
            truth = [t[allowed[t]] for t in test]
            nd, top = ndcg_at_k(scores, train, truth, allowed=allowed)
            users = [u for u, t in enumerate(truth) if len(t)]
            cov = len(np.unique(top[users])) / int(allowed.sum())
            rows.append({"model": name, "scope": scope, "ndcg10": nd, "coverage10": cov,
                         "novelty_bits": novelty(top[users], listeners, n_users), "fit_s": fit_s, "score_s": score_s})

    def evaluate_lists(name, top, fit_s, score_s, already):
        users = [u for u, t in enumerate(test) if len(t)]
        disc = 1.0 / np.log2(np.arange(2, 12))
        vals = []
        for u in users:
            rel = np.isin(top[u], test[u])
            vals.append(float((rel * disc).sum() / disc[: min(10, len(test[u]))].sum()))
        valid = top[users][top[users] >= 0]
        rows.append({"model": name, "scope": "whole catalog", "ndcg10": float(np.mean(vals)),
                     "coverage10": len(np.unique(valid)) / int(in_catalog.sum()),
                     "novelty_bits": novelty(valid, listeners, n_users), "fit_s": fit_s, "score_s": score_s,
                     "already_heard": already})

    all_users = train
    baselines = [("Pop", Popularity()), ("ItemKNN", ItemKNN(k=100)), ("EASE", EASE(lam=500.0)),
                 ("ALS (implicit, tuned on validation)", None)]
    if args.skip_ease_baseline:
        baselines = [b for b in baselines if b[0] != "EASE"]
    als_params = tuned_als(train_ds, args.seed)
    if args.spark:
        from recommender.spark import spark_als

        baselines.append(("ALS (Spark MLlib, same setting)", "spark"))
    for name, model in baselines:
        if model is None:
            model = ALS(als_params)
        if model == "spark":
            t0 = time.perf_counter()
            model = spark_als(train_ds, als_params)
            t1 = time.perf_counter()
            evaluate(name, model.scores(model.user_factors), t1 - t0, 0.0)
            continue
        t0 = time.perf_counter()
        model.fit(train)
        t1 = time.perf_counter()
        s = model.scores(model.user_factors) if isinstance(model, ALS) else model.scores(all_users)
        t2 = time.perf_counter()
        evaluate(name, s, t1 - t0, t2 - t1)
        print(f"bench: {name} fitted in {t1 - t0:.1f} s", file=sys.stderr)

    t0 = time.perf_counter()
    rec = fit(train_ds, FitParams(seed=args.seed), tune=True)
    t1 = time.perf_counter()
    fit_s = t1 - t0
    print(f"bench: fused fitted in {t1 - t0:.1f} s; weights {rec.weights.as_dict()}; {rec.validation}", file=sys.stderr)
    everyone = np.arange(n_users)
    for variant in args.variants.split(","):
        share, penalty = (float(v) for v in variant.split(":"))
        t1 = time.perf_counter()
        lists = rec.playlists(everyone, PlaylistParams(n=10, fresh_share=share, spread=penalty))
        t2 = time.perf_counter()
        top = np.array([[p.item for p in pl] + [-1] * (10 - len(pl)) for pl in lists])
        heard = rec.heard(everyone)
        already = sum(int(np.isin(top[u][top[u] >= 0], heard.indices[heard.indptr[u]:heard.indptr[u + 1]]).sum()) for u in everyone)
        evaluate_lists(f"fused playlist, fresh {share:.1f}, spread {penalty:.1f}", top, fit_s, t2 - t1, already)

    if args.ann_path:
        from dataclasses import replace as _replace

        t0 = time.perf_counter()
        big = fit(train_ds, _replace(FitParams(seed=args.seed), ann_min_items=0), tune=True)
        t1 = time.perf_counter()
        lists = big.playlists(everyone, PlaylistParams(n=10))
        t2 = time.perf_counter()
        top = np.array([[p.item for p in pl] + [-1] * (10 - len(pl)) for pl in lists])
        heard = big.heard(everyone)
        already = sum(int(np.isin(top[u][top[u] >= 0], heard.indices[heard.indptr[u]:heard.indptr[u + 1]]).sum()) for u in everyone)
        evaluate_lists("fused playlist, large-catalog path (hnswlib candidates, no EASE)", top, t1 - t0, t2 - t1, already)

    print(f"## Recommender: HetRec Last.fm 2k ({datetime.date.today().isoformat()})")
    print()
    print(f"Command: `python -m bench.recsys --seed {args.seed}`. Per-user 80/20 split of the {x.nnz} plays here "
          f"({int(sum(len(t) > 0 for t in test))} listeners with >= 10 artists, {sum(len(t) for t in test)} held out). "
          f"Fusion weights tuned on a 90/10 split of the training part only: {rec.weights.as_dict()}.")
    print()
    print("| model | scope | NDCG@10 | coverage@10 | novelty (bits) | fit s | score / playlists for all users s | already heard in the lists |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['scope']} | {r['ndcg10']:.4f} | {r['coverage10']:.3f} | {r['novelty_bits']:.2f} | "
              f"{r['fit_s']:.1f} | {r['score_s']:.2f} | {r.get('already_heard', '–')} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "weights": rec.weights.as_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
