"""Terms heard in the audio as a recommender source: do they reach the songs nobody tagged or played?

    python -m bench.audio_terms [--tracks 2000] [--users 1500] [--tag-share 0.5] [--json OUT.json]

The world is `bench.coldstart`'s (music21 renders in varied instruments, tempi and keys plus the
GTZAN clips; simulated listeners whose tastes are audible; 20 % of the tracks cold: nobody played
them, and the listeners' plays of them are held out as the truth).  People's tags: `--tag-share`
of the warm tracks carry their tokens (style, instrument family, tempo band, mode, drums) as terms,
as a catalog's best-known songs are the tagged ones; cold tracks have none.  Every track is then
analysed by the product's tagging stage (`analyzer.stages.tagging.tag`: both musicnn taggers, the patches
`TagParams` chooses) for its terms and its default embedding.

Each row is `recommend fit` (tuned on its validation split, as the CLI runs it, with the weight of
the hidden songs' ranking in the validation objective given: `--cold-shares`) on one dataset, and
NDCG@10 of its fused relevance ranking only the cold tracks (`bench.coldstart.ndcg_cold`), and over
every track a listener has not heard (warm and cold: does the audio part cost the warm ranking
anything?).  Two folds: two seeds, each its own listeners and cold split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .run import machine_text, resolve_eval_dir


def tag_corpus(audio: list[np.ndarray], sr: int) -> tuple[list[dict[str, float]], np.ndarray, float]:
    """Each track's terms (name -> probability, as `recommend ingest` stores them), its default
    embedding, and the seconds per track the tagging took."""
    from analyzer.stages import musicnn
    from analyzer.stages.tagging import tag

    mtt, msd = musicnn.load_tagger("mtt"), musicnn.load_tagger("msd")
    terms, emb = [], []
    t0 = time.perf_counter()
    for x in audio:
        t = tag(x, sr, mtt=mtt, msd=msd)
        heard: dict[str, float] = {}
        for term in t.terms:
            heard[term.name] = max(heard.get(term.name, 0.0), term.frequency)
        terms.append(heard)
        e = t.embedding()
        emb.append(np.zeros(200, np.float32) if e is None else e)
    return terms, np.array(emb, dtype=np.float32), (time.perf_counter() - t0) / max(len(audio), 1)


def run_fold(seed: int, tokens: list[set[str]], heard: list[dict[str, float]], emb: np.ndarray, n_users: int,
             tag_share: float, cold_shares: tuple[float, ...]) -> dict:
    from recommender.dataset import Dataset
    from recommender.evaluate import ndcg_at_k
    from recommender.fit import fit
    from recommender.model import FitParams

    from .coldstart import ndcg_cold, simulate_listeners

    n = len(tokens)
    plays = simulate_listeners(tokens, n_users, seed)
    rng = np.random.default_rng(seed)
    cold = np.zeros(n, dtype=bool)
    cold[rng.choice(n, size=int(round(0.2 * n)), replace=False)] = True
    pc = plays.tocoo()
    on_cold = cold[pc.col]
    # the warm plays: 90 % to fit on, 10 % held out with the cold plays as the "every track" truth
    keep = ~on_cold & (rng.random(len(pc.data)) >= 0.1)
    train = sp.csr_matrix((pc.data[keep], (pc.row[keep], pc.col[keep])), shape=plays.shape)
    truth_cold = [np.sort(pc.col[on_cold & (pc.row == u)]) for u in range(n_users)]
    truth_all = [np.sort(pc.col[~keep & (pc.row == u)]) for u in range(n_users)]
    tagged = ~cold & (rng.random(n) < tag_share)
    vocab = sorted({t for i in np.flatnonzero(tagged) for t in tokens[i]} | {t for h in heard for t in h})
    ti = {t: i for i, t in enumerate(vocab)}
    rows, cols = zip(*[(i, ti[t]) for i in np.flatnonzero(tagged) for t in tokens[i]])
    people = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(vocab)))
    hr, hc, hv = zip(*[(i, ti[t], p) for i, h in enumerate(heard) for t, p in h.items()])
    audio_terms = sp.csr_matrix((np.array(hv, np.float32), (hr, hc)), shape=(n, len(vocab)))
    ids = [f"t{i}" for i in range(n)]
    base = Dataset([f"u{u}" for u in range(n_users)], ids, ids, ids, train, vocab, people,
                   sp.csr_matrix((n_users, n), dtype=np.float32), emb, np.ones(n, dtype=bool))
    with_terms = replace(base, audio_term_counts=audio_terms)
    alone = replace(base, audio=None, audio_present=None, term_counts=sp.csr_matrix((n, len(vocab)), dtype=np.float32),
                    audio_term_counts=audio_terms)
    variants = {}
    for c in cold_shares:
        variants[f"people's tags + default embedding (before), cold share {c:g}"] = (base, c)
        variants[f"people's tags + default embedding + audio terms, cold share {c:g}"] = (with_terms, c)
    variants[f"audio terms only (no tags, no embedding), cold share {cold_shares[0]:g}"] = (alone, cold_shares[0])
    out = {}
    users = np.arange(n_users)
    for name, (ds, c) in variants.items():
        t0 = time.perf_counter()
        rec = fit(ds, FitParams(validation_cold_share=c))
        fit_s = time.perf_counter() - t0
        _, total = rec.relevance(users)
        heard_m = (train > 0).tocsr()
        out[name] = {"cold_ndcg10": ndcg_cold(total, cold, heard_m, truth_cold),
                     "all_ndcg10": ndcg_at_k(total, heard_m, truth_all)[0],
                     "weights": rec.weights.as_dict(), "audio_term_weight": rec.params.audio_term_weight
                     if ds.audio_term_counts is not None else None, "fit_s": fit_s}
        # the term source alone, to see what it reaches
        if rec.terms is not None:
            s = rec.source_scores(users)["terms"]
            s = np.where((train > 0).toarray(), -np.inf, s)
            out[name]["terms_alone_cold_ndcg10"] = ndcg_cold(s, cold, heard_m, truth_cold)
        print(f"bench: seed {seed}: {name}: cold {out[name]['cold_ndcg10']:.4f}, all {out[name]['all_ndcg10']:.4f} "
              f"({fit_s:.0f} s)", file=sys.stderr)
    out["_"] = {"cold_tracks": int(cold.sum()), "tagged_tracks": int(tagged.sum()), "plays": int(plays.nnz)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.audio_terms", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--tag-share", type=float, default=0.5)
    ap.add_argument("--cold-shares", type=float, nargs="+", default=[0.1, 0.5],
                    help="validation weights of the hidden songs' ranking to fit with (FitParams.validation_cold_share)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    from .coldstart import SR, load_corpus

    t0 = time.perf_counter()
    names, audio, tokens, _ = load_corpus(eval_dir, args.tracks, args.jobs)
    load_s = time.perf_counter() - t0
    heard, emb, tag_s = tag_corpus(audio, SR)
    print(f"bench: {len(names)} tracks loaded in {load_s:.0f} s, tagged at {tag_s:.3f} s per track", file=sys.stderr)
    folds = {seed: run_fold(seed, tokens, heard, emb, args.users, args.tag_share, tuple(args.cold_shares))
             for seed in (0, 1)}
    print(f"## Audio terms as a recommender source (issue 19, {dt.date.today()})")
    print()
    print(f"`python -m bench.audio_terms --tracks {args.tracks} --users {args.users} --tag-share {args.tag_share} "
          f"--cold-shares {' '.join(f'{c:g}' for c in args.cold_shares)}` on "
          f"{machine_text()}: {len(names)} tracks, {args.users} simulated listeners; per fold "
          f"{folds[0]['_']['cold_tracks']} cold tracks; people's tags on {folds[0]['_']['tagged_tracks']} / "
          f"{folds[1]['_']['tagged_tracks']} warm tracks; tagging {tag_s:.3f} s per 12 s track.")
    print()
    print("| fit on | cold NDCG@10 fold 0 | fold 1 | all NDCG@10 fold 0 | fold 1 | term source alone, cold, fold 0 | fold 1 | audio-term weight chosen | fusion weights (fold 0) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in folds[0]:
        if name == "_":
            continue
        a, b = folds[0][name], folds[1][name]
        alone = [f"{r.get('terms_alone_cold_ndcg10', float('nan')):.4f}" for r in (a, b)]
        w = ", ".join(f"{k} {v:g}" for k, v in a["weights"].items())
        print(f"| {name} | {a['cold_ndcg10']:.4f} | {b['cold_ndcg10']:.4f} | {a['all_ndcg10']:.4f} | "
              f"{b['all_ndcg10']:.4f} | {alone[0]} | {alone[1]} | {a['audio_term_weight']} / {b['audio_term_weight']} | {w} |")
    if args.json:
        args.json.write_text(json.dumps({"date": str(dt.date.today()), "machine": machine_text(),
                                         "tag_s": tag_s, "folds": folds}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
