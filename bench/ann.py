"""Exact scoring vs approximate nearest neighbours for ALS top-k, by catalog size.

    python -m bench.ann [--model M] [--sizes 18000,100000,400000]

Item factors are the fitted model's (or random ones shaped like them), replicated with noise
up to each size; 200 listeners' vectors query the top 50 by inner product.  Exact = one
matrix-vector product and argpartition; hnswlib and Spotify's voyager build an HNSW graph
(M=16, ef_construction=200) and are queried at the smallest ef whose recall@50 is >= 0.95.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np

K = 50


def exact_topk(y: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    s = y @ q
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model folder; default: random factors shaped like HetRec's")
    ap.add_argument("--sizes", default="18000,100000,400000")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    if args.model:
        from recommender.persist import load
        from recommender.store import Store

        rec = load(Store(args.model).current())
        base, users = rec.als.item_factors, rec.als.user_factors
    else:
        base = rng.standard_normal((18000, 128)).astype(np.float32) * 0.1
        users = rng.standard_normal((2000, 128)).astype(np.float32)
    queries = users[rng.choice(len(users), 200, replace=False)]
    import hnswlib
    import voyager

    print(f"## ANN break-even ({datetime.date.today().isoformat()})\n")
    print(f"Command: `python -m bench.ann {'--model ' + args.model if args.model else ''} --sizes {args.sizes}`; "
          f"{base.shape[1]} factors, top {K}, 200 single queries, 2 cores.\n")
    print("| items | exact ms/query | exact, all 200 at once ms/query | hnswlib build s | hnswlib ef | hnswlib ms/query | hnswlib recall | voyager build s | voyager ef | voyager ms/query | voyager recall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        reps = -(-n // len(base))
        y = np.concatenate([base + rng.standard_normal(base.shape).astype(np.float32) * 0.01 * (i > 0) for i in range(reps)])[:n]
        y = np.ascontiguousarray(y)
        t0 = time.perf_counter()
        truth = [exact_topk(y, q) for q in queries]
        exact_ms = (time.perf_counter() - t0) / len(queries) * 1000
        t0 = time.perf_counter()
        s = queries @ y.T
        np.argpartition(-s, K, axis=1)[:, :K]
        batch_ms = (time.perf_counter() - t0) / len(queries) * 1000
        row = [f"{n}", f"{exact_ms:.2f}", f"{batch_ms:.2f}"]

        t0 = time.perf_counter()
        h = hnswlib.Index(space="ip", dim=y.shape[1])
        h.init_index(max_elements=n, ef_construction=200, M=16, random_seed=0)
        h.add_items(y, np.arange(n), num_threads=2)
        hb = time.perf_counter() - t0
        for ef in (50, 100, 200, 400, 800):
            h.set_ef(ef)
            t0 = time.perf_counter()
            found = [h.knn_query(q, k=K)[0][0] for q in queries]
            ms = (time.perf_counter() - t0) / len(queries) * 1000
            r = recall(found, truth)
            if r >= 0.95:
                break
        row += [f"{hb:.1f}", f"{ef}", f"{ms:.2f}", f"{r:.3f}"]

        t0 = time.perf_counter()
        v = voyager.Index(voyager.Space.InnerProduct, num_dimensions=y.shape[1], M=16, ef_construction=200, random_seed=0)
        v.add_items(y, num_threads=2)
        vb = time.perf_counter() - t0
        for ef in (50, 100, 200, 400, 800):
            t0 = time.perf_counter()
            found = [v.query(q, k=K, query_ef=ef)[0] for q in queries]
            ms_v = (time.perf_counter() - t0) / len(queries) * 1000
            rv = recall(found, truth)
            if rv >= 0.95:
                break
        row += [f"{vb:.1f}", f"{ef}", f"{ms_v:.2f}", f"{rv:.3f}"]
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
