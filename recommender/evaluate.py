"""Measuring a recommender offline: held-out splits, the top N a listener has not heard, NDCG@k.

Used by `fit`'s tuning on a validation split, by `bench.recsys` and by the tests; nothing here
is on the path of a playlist.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def split_per_user(x: sp.csr_matrix, *, share: float, min_items: int, seed: int) -> tuple[sp.csr_matrix, list[np.ndarray]]:
    """Hold out a share of each listener's items.

    Parameters
    ----------
    x : scipy.sparse.csr_matrix
        Listeners x items plays.
    share : float
        Share of each listener's items held out (rounded to whole items).
    min_items : int
        Listeners with fewer items keep them all (and hold out nothing).
    seed : int
        Seed of the draw.

    Returns
    -------
    train : scipy.sparse.csr_matrix
        `x` without the held-out pairs.
    held : list of numpy.ndarray
        Per listener row, the held-out item indices, sorted.
    """
    rng = np.random.default_rng(seed)
    x = x.tocsr()
    keep = x.copy().tolil()
    held: list[np.ndarray] = []
    for u in range(x.shape[0]):
        items = x.indices[x.indptr[u] : x.indptr[u + 1]]
        if len(items) < min_items:
            held.append(np.zeros(0, dtype=np.int64))
            continue
        out = rng.choice(items, size=int(round(share * len(items))), replace=False)
        for i in out:
            keep[u, i] = 0
        held.append(np.sort(out))
    train = keep.tocsr()
    train.eliminate_zeros()
    return train, held


def held_out_matrix(held: list[np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    """The held-out pairs of `split_per_user` as a listeners x items matrix of ones."""
    lens = [len(h) for h in held]
    return sp.csr_matrix((np.ones(sum(lens), dtype=np.float32), (np.repeat(np.arange(len(held)), lens),
                          np.concatenate(held) if sum(lens) else np.zeros(0, int))), shape=shape)


def drop_pairs(m: sp.csr_matrix, pairs: sp.csr_matrix) -> sp.csr_matrix:
    """`m` without the entries where `pairs` is non-zero (a listener's tags on held-out items, say)."""
    out = (m - m.multiply(pairs > 0)).tocsr()
    out.eliminate_zeros()
    return out


def top_n(scores: np.ndarray, heard: sp.csr_matrix, n: int,
          allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per listener, the n best-scored items they have not heard, best first (implicit's `recommend`).

    Parameters
    ----------
    scores : numpy.ndarray
        Listeners x items scores of any scorer (not modified).
    heard : scipy.sparse.csr_matrix
        Listeners x items: non-zero where the listener has heard the item; those never come back.
    n : int
        How many per listener; less than the number of items.
    allowed : numpy.ndarray of bool, optional
        Items that may be returned (default: all).

    Returns
    -------
    ids, scores : numpy.ndarray
        Listeners x n item indices and their scores, best first.  Where fewer than n items are
        allowed and unheard, the rest are heard or disallowed items with score -inf.
    """
    s = scores.copy()
    rows = np.repeat(np.arange(heard.shape[0]), np.diff(heard.indptr))
    s[rows, heard.indices] = -np.inf
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    top = np.argpartition(-s, n, axis=1)[:, :n]
    order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(s, top, axis=1)


def ndcg_at_k(scores: np.ndarray, seen: sp.csr_matrix, truth: list[np.ndarray], k: int = 10,
              allowed: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean NDCG@k with binary relevance.

    Parameters
    ----------
    scores : numpy.ndarray
        Listeners x items scores.
    seen : scipy.sparse.csr_matrix
        What each listener has heard: never ranked.
    truth : list of numpy.ndarray
        Per listener row, the held-out items; rows with none are left out of the mean.
    k : int
        Depth of the ranking.
    allowed : numpy.ndarray of bool, optional
        Items that may be ranked (default: all).

    Returns
    -------
    ndcg : float
        The mean over rows with truth (0 where there are none).
    top : numpy.ndarray
        Listeners x k item indices, best first.
    """
    top, _ = top_n(scores, seen, k, allowed)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    vals = []
    for r, t in enumerate(truth):
        if len(t) == 0:
            continue
        rel = np.isin(top[r], t)
        ideal = disc[: min(k, len(t))].sum()
        vals.append(float((rel * disc).sum() / ideal))
    return (float(np.mean(vals)) if vals else 0.0), top
