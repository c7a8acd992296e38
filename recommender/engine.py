"""The recommender: data in matrices, fitting every scorer, fused scores, playlists with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .fusion import FusionWeights, fuse, split_per_user, standardize, tune_weights
from .models import ALS, ALSParams, EASE, AudioVectors, ItemKNN, TermVectors, log_confidence


@dataclass(frozen=True)
class Dataset:
    users: list[str]
    items: list[str]
    item_names: list[str]
    item_artists: list[str]  # where items are tracks: their artist (the 2-per-artist rule); else the item itself
    plays: sp.csr_matrix  # users x items
    terms: list[str]
    term_counts: sp.csr_matrix  # items x terms
    user_tags: sp.csr_matrix  # users x items: how often a listener tagged an item (HetRec), else empty
    audio: np.ndarray | None = None  # items x d features from analyses (or CNN embeddings)
    audio_present: np.ndarray | None = None

    @classmethod
    def from_hetrec(cls, h) -> Dataset:
        users = sorted({r.user for r in h.plays} | {u for u, _, _ in h.user_tags}, key=_natural)
        items = sorted({r.item for r in h.plays} | {t.item for t in h.terms}, key=_natural)
        ui = {u: i for i, u in enumerate(users)}
        ii = {a: i for i, a in enumerate(items)}
        plays = sp.csr_matrix(
            ([r.plays for r in h.plays], ([ui[r.user] for r in h.plays], [ii[r.item] for r in h.plays])),
            shape=(len(users), len(items)), dtype=np.float32,
        )
        terms = sorted({t.term for t in h.terms})
        ti = {t: i for i, t in enumerate(terms)}
        term_counts = sp.csr_matrix(
            ([t.weight for t in h.terms], ([ii[t.item] for t in h.terms], [ti[t.term] for t in h.terms])),
            shape=(len(items), len(terms)), dtype=np.float32,
        )
        ut = [(u, a, n) for u, a, n in h.user_tags if u in ui and a in ii]
        user_tags = sp.csr_matrix(
            ([n for _, _, n in ut], ([ui[u] for u, _, _ in ut], [ii[a] for _, a, _ in ut])),
            shape=(len(users), len(items)), dtype=np.float32,
        )
        names = [h.item_names.get(a, a) for a in items]
        return cls(users, items, names, names, plays, terms, term_counts, user_tags)

    def with_plays(self, plays: sp.csr_matrix, *, user_tags: sp.csr_matrix | None = None) -> Dataset:
        return replace(self, plays=plays.tocsr(), user_tags=self.user_tags if user_tags is None else user_tags.tocsr())


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


@dataclass(frozen=True)
class FitParams:
    als: ALSParams = field(default_factory=ALSParams)
    ease_lambda: float = 500.0
    # EASE inverts an items x items matrix: only items with at least this many listeners take part
    ease_min_listeners: int = 2
    knn_k: int = 100
    # a listener's own tags count as this many plays' worth of interest in their term profile
    user_tag_weight: float = 1.0
    validation_share: float = 0.1
    seed: int = 0


@dataclass
class Recommender:
    data: Dataset
    params: FitParams
    als: ALS
    ease: EASE | None
    knn: ItemKNN | None
    terms: TermVectors | None
    audio: AudioVectors | None
    weights: FusionWeights
    validation: dict = field(default_factory=dict)

    @property
    def listeners(self) -> np.ndarray:
        return np.asarray((self.data.plays > 0).sum(axis=0)).ravel()

    def parts(self, rows: np.ndarray, user_vectors: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        x = self.data.plays[rows]
        w = self.weights
        uv = self.als.user_factors[rows] if user_vectors is None else user_vectors
        out: dict[str, np.ndarray | None] = {"cf": self.als.scores(uv)}
        out["ease"] = self.ease.scores(x) if self.ease is not None and w.ease else None
        out["knn"] = self.knn.scores(x) if self.knn is not None and w.knn else None
        if self.terms is not None and w.terms:
            extra = self.params.user_tag_weight * (log_confidence(self.data.user_tags[rows]) @ self.terms.vectors)
            out["terms"] = self.terms.scores(x, extra)
        else:
            out["terms"] = None
        out["audio"] = self.audio.scores(x) if self.audio is not None and w.audio else None
        return out

    def score_all(self, rows: np.ndarray | None = None, *, batch: int = 512) -> np.ndarray:
        rows = np.arange(self.data.plays.shape[0]) if rows is None else rows
        cand = np.ones(self.data.plays.shape[1], dtype=bool)
        out = np.empty((len(rows), self.data.plays.shape[1]), dtype=np.float32)
        for i in range(0, len(rows), batch):
            out[i : i + batch] = fuse(self.parts(rows[i : i + batch]), self.weights, cand)
        return out


def fit(data: Dataset, params: FitParams = FitParams(), *, tune: bool = True,
        weights: FusionWeights | None = None) -> Recommender:
    """Fit every scorer on `data`; with tune, choose the fusion weights on a validation split of it first."""
    chosen = weights or FusionWeights()
    validation: dict = {}
    if tune:
        train, val = split_per_user(data.plays, share=params.validation_share, min_items=10, seed=params.seed + 1)
        held = _pairs(val, data.plays.shape)
        sub = _fit_parts(data.with_plays(train, user_tags=_drop(data.user_tags, held)), params,
                         FusionWeights(cf=1, ease=1, knn=1, terms=1, audio=1 if data.audio is not None else 0))
        rows = np.array([u for u, v in enumerate(val) if len(v)])
        parts = sub.parts(rows)
        chosen, best, trail = tune_weights(parts, train[rows], [val[u] for u in rows], np.ones(train.shape[1], bool))
        validation = {"ndcg10": best, "users": int(len(rows)), "grid": len(trail)}
    rec = _fit_parts(data, params, chosen)
    rec.validation = validation
    return rec


def _pairs(held: list[np.ndarray], shape) -> sp.csr_matrix:
    lens = [len(h) for h in held]
    return sp.csr_matrix((np.ones(sum(lens), dtype=np.float32), (np.repeat(np.arange(len(held)), lens),
                          np.concatenate(held) if sum(lens) else np.zeros(0, int))), shape=shape)


def _drop(m: sp.csr_matrix, held: sp.csr_matrix) -> sp.csr_matrix:
    out = (m - m.multiply(held > 0)).tocsr()
    out.eliminate_zeros()
    return out


def _fit_parts(data: Dataset, params: FitParams, weights: FusionWeights) -> Recommender:
    x = data.plays
    als = ALS(params.als).fit(x)
    ease = EASE(params.ease_lambda, params.ease_min_listeners).fit(x) if weights.ease else None
    knn = ItemKNN(params.knn_k).fit(x) if weights.knn else None
    terms = TermVectors().fit(data.term_counts) if weights.terms and data.term_counts.nnz else None
    audio = None
    if weights.audio and data.audio is not None:
        audio = AudioVectors().fit(data.audio, data.audio_present)
    return Recommender(data, params, als, ease, knn, terms, audio, weights)


__all__ = ["Dataset", "FitParams", "Recommender", "fit", "standardize"]
