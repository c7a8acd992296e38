"""Fusing the scorers: per-listener standardized scores, weighted, then a playlist with reasons.

The weights are chosen on a validation split carved from the training plays only
(`tune_weights`), never from what is held out for measuring.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .evaluate import ndcg_at_k

SOURCES = ("cf", "ease", "knn", "terms", "audio")


@dataclass(frozen=True)
class FusionWeights:
    cf: float = 1.0
    ease: float = 1.0
    knn: float = 0.0
    terms: float = 0.3
    audio: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {s: float(getattr(self, s)) for s in SOURCES}


def standardize(s: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row: z-scores over the candidate items (mean 0, sd 1), so sources of any scale can be added."""
    c = s[:, candidates]
    mu = c.mean(axis=1, keepdims=True)
    sd = c.std(axis=1, keepdims=True) + 1e-9
    return (s - mu) / sd


def fuse(parts: dict[str, np.ndarray | None], weights: FusionWeights,
         candidates: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(each weighted source standardized per listener over the candidates, their weighted sum)."""
    w = weights.as_dict()
    z = {}
    for name, s in parts.items():
        if s is None or w.get(name, 0.0) == 0.0:
            continue
        z[name] = standardize(s, np.ones(s.shape[1], bool) if candidates is None else candidates)
    if not z:
        raise ValueError("every source has weight 0")
    total = sum(w[name] * v for name, v in z.items()).astype(np.float32)
    return z, total


def tune_weights(parts: dict[str, np.ndarray], seen: sp.csr_matrix, truth: list[np.ndarray],
                 candidates: np.ndarray, grid: dict[str, tuple[float, ...]] | None = None,
                 allowed: np.ndarray | None = None) -> tuple[FusionWeights, float, list[tuple[dict, float]]]:
    """Grid search of the fusion weights by NDCG@10 on a validation split (cf's weight fixed at 1)."""
    grid = grid or {"ease": (0.25, 0.5, 1.0), "knn": (0.0, 0.5), "terms": (0.2, 0.4, 0.8, 1.2, 1.6), "audio": (0.0, 0.2)}
    names = [n for n in grid if parts.get(n) is not None]
    z = {n: standardize(s, candidates) for n, s in parts.items() if s is not None}
    best, best_score, trail = FusionWeights(), -1.0, []
    for combo in itertools.product(*(grid[n] for n in names)):
        w = {"cf": 1.0, **{n: 0.0 for n in SOURCES if n != "cf"}, **dict(zip(names, combo))}
        total = sum(w[n] * z[n] for n in z if w.get(n, 0.0) != 0.0)
        score, _ = ndcg_at_k(total, seen, truth, allowed=allowed)
        trail.append((w, score))
        if score > best_score:
            best, best_score = FusionWeights(**w), score
    return best, best_score, trail


@dataclass
class Pick:
    item: int
    score: float
    sources: dict[str, float] = field(default_factory=dict)
    fresh: bool = False
