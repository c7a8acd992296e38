"""The scorers: ALS on implicit feedback, EASE and item-kNN (baselines and CF votes), term vectors, audio.

Each is fitted on a users x items matrix (scipy CSR, play counts) and scores listeners through
one interface, `scores(listeners, items=None)`: a len(listeners) x len(items) array (every item by
default), one matrix product, no Python loop per item.  A listener is given as their row of plays
(ALS: their factor vector).  `recommender.model.Recommender.source_scores` calls every scorer this
way on both the exact and the ANN path; `recommender.evaluate.top_n` turns scores into
implicit-style (ids, scores) best first.  tests/test_scorer_contract.py holds each to the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def bm25(x: sp.csr_matrix, *, k1: float = 100.0, b: float = 0.8) -> sp.csr_matrix:
    """Okapi BM25 weights of a users x items count matrix (rows are documents), by implicit's `bm25_weight`.

    Parameters
    ----------
    x : scipy.sparse.csr_matrix
        Users x items counts.
    k1, b : float
        BM25's saturation and length normalization.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32, the same pattern as `x`.
    """
    from implicit.nearest_neighbours import bm25_weight

    return bm25_weight(x.tocoo(), K1=k1, B=b).tocsr().astype(np.float32)


def log_confidence(x: sp.csr_matrix, *, alpha: float = 1.0) -> sp.csr_matrix:
    """Each count c as 1 + alpha * log(1 + c) (float32, the same pattern as `x`)."""
    y = x.copy().astype(np.float32)
    y.data = 1.0 + alpha * np.log1p(y.data)
    return y


def binary(x: sp.csr_matrix) -> sp.csr_matrix:
    """Each stored count as 1 (float32): a play counts once however often it was played."""
    y = x.copy().astype(np.float32)
    y.data[:] = 1.0
    return y


def weight(x: sp.csr_matrix, scheme: str, *, alpha: float = 1.0) -> sp.csr_matrix:
    """Counts weighted for ALS: `scheme` is "bm25", "log" (with `alpha`) or "binary"."""
    if scheme == "bm25":
        return bm25(x)
    if scheme == "log":
        return log_confidence(x, alpha=alpha)
    if scheme == "binary":
        return binary(x)
    raise ValueError(f"unknown weighting {scheme!r} (bm25, log or binary)")


@dataclass(frozen=True)
class ALSParams:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    weighting: str = "bm25"
    seed: int = 0


class ALS:
    """Hu, Koren & Volinsky's confidence-weighted ALS, fitted by `implicit` (conjugate gradient)."""

    def __init__(self, params: ALSParams = ALSParams()):
        self.params = params
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    def fit(self, x: sp.csr_matrix) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.recommender_base import ModelFitError
        from threadpoolctl import threadpool_limits

        from analyzer.errors import InputError

        p = self.params
        model = AlternatingLeastSquares(
            factors=p.factors, regularization=p.regularization, alpha=p.alpha, iterations=p.iterations,
            random_state=p.seed, num_threads=0,  # each user's and item's solve is independent: same result on any core count
        )
        # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes the cores
        with threadpool_limits(1, "blas"):
            try:
                model.fit(weight(x, p.weighting), show_progress=False)
            except ModelFitError as exc:
                raise InputError(f"ALS could not fit these plays ({exc}): look for extreme play counts") from None
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    @classmethod
    def from_factors(cls, user_factors: np.ndarray, item_factors: np.ndarray, params: ALSParams) -> ALS:
        m = cls(params)
        m.user_factors, m.item_factors = user_factors, item_factors
        return m

    def fold_in(self, x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """User vectors for listeners the model was not fitted on (implicit's recalculate_user): one
        least-squares solve each against the fixed item factors.  `x` holds every listener's plays so
        that weightings with corpus statistics (BM25) see the same corpus as the fit."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        p = self.params
        model = AlternatingLeastSquares(factors=p.factors, regularization=p.regularization, alpha=p.alpha,
                                        random_state=p.seed, num_threads=1)
        model.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        with threadpool_limits(1, "blas"):
            out = model.recalculate_user(np.asarray(rows), weight(x, p.weighting)[rows])
        return np.asarray(out, dtype=np.float32).reshape(len(rows), -1)

    def scores(self, user_vectors: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Inner products of listeners' factor vectors (n x factors) with the items' (default: all)."""
        y = self.item_factors if items is None else self.item_factors[items]
        return user_vectors @ y.T


class EASE:
    """Steck's EASE^R: a closed-form item-item model (baseline and CF vote)."""

    def __init__(self, lam: float = 500.0, min_users: int = 1):
        self.lam, self.min_users = lam, min_users

    def fit(self, x: sp.csr_matrix) -> EASE:
        xb = binary(x)
        counts = np.asarray(xb.sum(axis=0)).ravel()
        self.items = np.flatnonzero(counts >= self.min_users)
        xs = xb[:, self.items]
        # float32 halves the inversion's time; with lambda in the hundreds the system is well conditioned
        g = (xs.T @ xs).toarray().astype(np.float32)
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.B = b.astype(np.float32)
        self.n_items = x.shape[1]
        return self

    def scores(self, rows: sp.csr_matrix, items: np.ndarray | None = None) -> np.ndarray:
        """Listeners' plays (n x items) -> n x len(items) scores; items with too few listeners score 0."""
        out = np.zeros((rows.shape[0], self.n_items), dtype=np.float32)
        out[:, self.items] = binary(rows)[:, self.items] @ self.B
        # B is dense items x items: every column costs the same, so a subset is cut from the whole
        return out if items is None else out[:, items]


class ItemKNN:
    """Cosine item-item neighbours on BM25-weighted plays, the top k per item (implicit's all-pairs kNN)."""

    def __init__(self, k: int = 100):
        self.k = k

    def fit(self, x: sp.csr_matrix) -> ItemKNN:
        """Each item's k most similar items (cosine of BM25-weighted listener vectors), itself left out.

        implicit's `ItemItemRecommender` keeps each item's top K by dot product of the item columns
        of a users x items matrix; the columns go in BM25-weighted and L2-normalized, so the dot
        product is the cosine (its `CosineRecommender` would normalize unweighted counts, and hands
        implicit a COO matrix it warns about).  Differs from the Python loop it replaced in float64
        sums (similarities within 3e-7) and in which of several equal k-th neighbours is kept (299 of 16,744
        HetRec artists; bench/RESULTS.md, 2026-11-29).
        """
        from implicit.nearest_neighbours import ItemItemRecommender

        w = bm25(x).T.tocsr()  # items x users
        norms = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel()) + 1e-9
        w = (sp.diags(1.0 / norms) @ w).T.tocsr().astype(np.float64)
        # an item is its own nearest neighbour (cosine 1): ask for one more, then drop it
        model = ItemItemRecommender(K=self.k + 1, num_threads=0)
        model.fit(w, show_progress=False)
        sim = model.similarity.tocsr().astype(np.float32)
        sim.setdiag(0)
        sim.eliminate_zeros()
        self.sim = _at_most_k_per_row(sim, self.k)
        return self

    def scores(self, rows: sp.csr_matrix, items: np.ndarray | None = None) -> np.ndarray:
        """Listeners' plays (n x items) -> n x len(items): per item, the summed similarity of its
        neighbours the listener played (each play counts once)."""
        sim = self.sim if items is None else self.sim[items]
        return np.asarray((binary(rows) @ sim.T).todense(), dtype=np.float32)


def _at_most_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """`m` with only each row's k largest entries.  Only rows where the item itself was not among
    its k + 1 nearest (more than k items exactly as similar as it is to itself) have more."""
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((-m.data, rows))  # by row, largest first within a row
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = np.sort(order[rank < k])
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


class Popularity:
    def fit(self, x: sp.csr_matrix) -> Popularity:
        self.listeners = np.asarray(binary(x).sum(axis=0)).ravel().astype(np.float32)
        return self

    def scores(self, rows: sp.csr_matrix, items: np.ndarray | None = None) -> np.ndarray:
        """Every listener gets the items' listener counts."""
        counts = self.listeners if items is None else self.listeners[items]
        return np.repeat(counts[None, :], rows.shape[0], axis=0)


class TermVectors:
    """Per item, BM25-weighted term vectors (the Echo Nest's "top terms"), L2-normalized rows.

    A term's weight for an item is its BM25 score given how often the item was described with
    it (tag counts, or word counts of its texts), against how many items carry the term.

    Terms heard in the audio (the analyzer's taggers) are a second, audio-derived part over the
    same vocabulary, weighted by their probability: each part is BM25-weighted against its own
    document frequencies and L2-normalized, and an item's vector is the normalized sum
    ``tags + audio_weight * audio``.  An item nobody tagged is then described by its audio terms
    alone, so term similarity reaches it; `audio_weight` (0 leaves the audio part out) is chosen
    on the validation split by `recommender.fit`."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b

    def fit(self, counts: sp.csr_matrix, audio: sp.csr_matrix | None = None, audio_weight: float = 0.0) -> TermVectors:
        """Fit the item vectors.

        Parameters
        ----------
        counts : scipy.sparse.csr_matrix
            Items x terms: how often people described an item with a term.
        audio : scipy.sparse.csr_matrix, optional
            Items x terms (the same columns): the taggers' probability of each term heard in the
            item's audio.
        audio_weight : float
            Weight of the audio part beside the tags (each part a unit vector).

        Returns
        -------
        TermVectors
            `vectors` (unit rows), `has_terms` per item, `audio_weight` (0 where there is no
            audio part).
        """
        tags = self._bm25(counts)
        self.audio_weight = float(audio_weight) if audio is not None and audio.nnz else 0.0
        if self.audio_weight > 0:
            w = (_unit_rows(tags) + self.audio_weight * _unit_rows(self._bm25(audio))).tocsr()
        else:
            w = tags
        self.vectors = _unit_rows(w).astype(np.float32)
        self.has_terms = np.asarray(abs(w).sum(axis=1)).ravel() > 0
        return self

    def _bm25(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        c = counts.tocsr().astype(np.float64)
        n_items = c.shape[0]
        df = np.bincount(c.indices, minlength=c.shape[1]).astype(np.float64)
        idf = np.log1p((n_items - df + 0.5) / (df + 0.5))
        length = np.asarray(c.sum(axis=1)).ravel()
        avg = float(length[length > 0].mean()) if np.any(length > 0) else 1.0
        rows = np.repeat(np.arange(n_items), np.diff(c.indptr))
        tf = c.data
        norm = self.k1 * (1 - self.b + self.b * length[rows] / avg)
        data = tf * (self.k1 + 1) / (tf + norm) * idf[c.indices]
        return sp.csr_matrix((data, c.indices, c.indptr), shape=c.shape)

    def profiles(self, rows: sp.csr_matrix, extra: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """A listener's term profile: the term vectors of what they play, weighted by log plays."""
        p = log_confidence(rows) @ self.vectors
        if extra is not None:
            p = p + extra
        return _unit_rows(p)

    def scores(self, rows: sp.csr_matrix, extra: sp.csr_matrix | None = None,
               items: np.ndarray | None = None) -> np.ndarray:
        """Cosine of each listener's term profile (see `profiles`) with the items' term vectors."""
        vectors = self.vectors if items is None else self.vectors[items]
        return np.asarray((self.profiles(rows, extra) @ vectors.T).todense(), dtype=np.float32)


class AudioVectors:
    """Items described by their analyses (or CNN embeddings): standardized, L2-normalized vectors."""

    def fit(self, features: np.ndarray, present: np.ndarray) -> AudioVectors:
        f = features.astype(np.float64)
        mu = f[present].mean(axis=0) if present.any() else np.zeros(f.shape[1])
        sd = f[present].std(axis=0) + 1e-9 if present.any() else np.ones(f.shape[1])
        z = (f - mu) / sd
        z[~present] = 0.0
        n = np.linalg.norm(z, axis=1, keepdims=True)
        self.vectors = (z / np.maximum(n, 1e-12)).astype(np.float32)
        self.present = present
        return self

    def scores(self, rows: sp.csr_matrix, items: np.ndarray | None = None) -> np.ndarray:
        """Cosine of each listener's audio profile (log-play-weighted mean of what they play) with the items'."""
        prof = np.asarray(log_confidence(rows) @ self.vectors)
        prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)
        vectors = self.vectors if items is None else self.vectors[items]
        return (prof @ vectors.T).astype(np.float32)


def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m).tocsr()
