"""Fusing the scorers: per-listener standardized scores, weighted; the weights tuned on a validation split.

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
class ColdObjective:
    """The validation's second half where a catalog has songs nobody played: how the songs whose plays
    it hid rank among themselves, weighed by `share` beside the warm ranking (1 - share)."""

    truth: list[np.ndarray]  # per validation listener, the hidden songs they played
    items: np.ndarray  # bool per item: hidden
    share: float


@dataclass(frozen=True)
class FusionWeights:
    """Weight of each source's per-listener z-scores in the fused relevance (0: the source is not fitted)."""

    cf: float = 1.0
    ease: float = 1.0
    knn: float = 0.0
    terms: float = 0.3
    audio: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Source name -> weight, in `SOURCES` order."""
        return {s: float(getattr(self, s)) for s in SOURCES}


def standardize(s: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row, z-scores with the mean and spread of the candidate items, so sources of any scale can be added.

    Parameters
    ----------
    s : numpy.ndarray
        Listeners x items scores.
    candidates : numpy.ndarray of bool
        The columns whose scores set each row's mean and standard deviation.

    Returns
    -------
    numpy.ndarray
        `s` standardized, every column (not only the candidates).
    """
    c = s[:, candidates]
    mu = c.mean(axis=1, keepdims=True)
    sd = c.std(axis=1, keepdims=True) + 1e-9
    return (s - mu) / sd


def fuse(parts: dict[str, np.ndarray | None], weights: FusionWeights,
         candidates: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Standardize each weighted source per listener and add them up with their weights.

    Parameters
    ----------
    parts : dict
        Source name -> listeners x items scores, or None (left out, as are sources of weight 0).
    weights : FusionWeights
    candidates : numpy.ndarray of bool, optional
        Columns that set each source's mean and spread (default: all).

    Returns
    -------
    z : dict
        Source name -> its z-scores.
    total : numpy.ndarray
        float32 weighted sum of the z-scores.

    Raises
    ------
    ValueError
        Every source has weight 0 (a model that `integrity.check_manifest` would refuse: a bug).
    """
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
                 allowed: np.ndarray | None = None,
                 cold: ColdObjective | None = None) -> tuple[FusionWeights, float, list[tuple[dict, float]]]:
    """Grid search of the fusion weights by NDCG@10 on a validation split (cf's weight fixed at 1).

    Parameters
    ----------
    parts : dict
        Source name -> validation listeners x items scores (None: the source is left out).
    seen : scipy.sparse.csr_matrix
        What those listeners heard in the training part: never ranked.
    truth : list of numpy.ndarray
        Per listener, the validation items.
    candidates : numpy.ndarray of bool
        Columns that set each source's mean and spread.
    grid : dict, optional
        Source name -> weights tried (default: the grid the model's weights were chosen on).
    allowed : numpy.ndarray of bool, optional
        Items that may be ranked.
    cold : ColdObjective, optional
        Where the split hid songs' plays: the score is then (1 - cold.share) x the NDCG@10 above
        + cold.share x the NDCG@10 of the hidden songs ranked among themselves.

    Returns
    -------
    best : FusionWeights
    best_score : float
        Its NDCG@10 (the weighted one with `cold`).
    trail : list
        (weights as a dict, NDCG@10) for every combination tried.
    """
    grid = grid or {"ease": (0.25, 0.5, 1.0), "knn": (0.0, 0.5), "terms": (0.2, 0.4, 0.8, 1.2, 1.6), "audio": (0.0, 0.2)}
    names = [n for n in grid if parts.get(n) is not None]
    z = {n: standardize(s, candidates) for n, s in parts.items() if s is not None}
    best, best_score, trail = FusionWeights(), -1.0, []
    for combo in itertools.product(*(grid[n] for n in names)):
        w = {"cf": 1.0, **{n: 0.0 for n in SOURCES if n != "cf"}, **dict(zip(names, combo))}
        total = sum(w[n] * z[n] for n in z if w.get(n, 0.0) != 0.0)
        score, _ = ndcg_at_k(total, seen, truth, allowed=allowed)
        if cold is not None:
            score = (1.0 - cold.share) * score + cold.share * ndcg_at_k(total, seen, cold.truth, allowed=cold.items)[0]
        trail.append((w, score))
        if score > best_score:
            best, best_score = FusionWeights(**w), score
    return best, best_score, trail


@dataclass
class Pick:
    """One playlist entry: item column, fused score, each source's z-score, whether it is fresh."""

    item: int
    score: float
    sources: dict[str, float] = field(default_factory=dict)
    fresh: bool = False
