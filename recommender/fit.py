"""Fitting a recommender: every scorer on the plays, ALS and fusion settings tuned on a validation split."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .dataset import Dataset
from .evaluate import drop_pairs, held_out_matrix, ndcg_at_k, split_per_user
from .fusion import ColdObjective, FusionWeights, tune_weights
from .model import ALS_GRID, AUDIO_TERM_GRID, FitParams, Recommender
from .models import ALS, EASE, AudioVectors, ItemKNN, TermVectors


def fit(data: Dataset, params: FitParams = FitParams(), *, tune: bool = True,
        weights: FusionWeights | None = None) -> Recommender:
    """Fit every scorer on `data`.

    Parameters
    ----------
    data : Dataset
        Plays, terms, listeners' tags, audio.
    params : FitParams
        Scorer settings; with `tune`, its ALS setting is replaced by the best of `ALS_GRID`.
    tune : bool
        Choose the ALS setting and the fusion weights on a validation split of `data` first
        (the split is carved from `data` only, never from anything held out by the caller).
    weights : FusionWeights, optional
        Fusion weights to use without tuning (default: `FusionWeights()`).

    Returns
    -------
    Recommender
        Its `validation` holds the tuning's figures (empty without `tune`; ``{"skipped": why}`` where
        the data is too small to hold out a validation split: the default settings are fitted then).
    """
    chosen = weights or FusionWeights()
    validation: dict = {}
    if tune:
        tuned = _tune(data, params)
        if isinstance(tuned, str):
            validation = {"skipped": tuned}
        else:
            params, chosen, validation = tuned
    rec = fit_parts(data, params, chosen)
    rec.validation = validation
    return rec


# a listener needs this many items for the validation split to hold one out (`split_per_user`)
MIN_TUNING_ITEMS = 10


def _tune(data: Dataset, params: FitParams) -> tuple[FitParams, FusionWeights, dict] | str:
    """The best ALS setting of the grid, then the best fusion weights (and, where the catalog has terms
    heard in the audio, the best weight of those beside people's terms), by NDCG@10 on a validation split.

    Where the catalog has songs nobody played but whose audio was analysed, the split also hides
    every play of a share of the played songs with audio, and the objective weighs how the hidden
    songs rank among themselves by `FitParams.validation_cold_share` (by default the playlist's share
    for songs with few listeners): otherwise the split could only see warm songs, and would weigh the audio
    sources by what they do for songs people already play, which is not what they are for.

    Where no listener has `MIN_TUNING_ITEMS` items, nothing can be held out: why, in words."""
    hidden = validation_cold_items(data, share=params.validation_share, seed=params.seed + 2)
    plays = data.plays
    if hidden is not None:
        hidden_plays = sp.csr_matrix(data.plays.multiply(hidden[None, :].astype(np.float32)))
        hidden_plays.eliminate_zeros()  # the product keeps the other songs' entries as explicit zeros
        plays = drop_pairs(data.plays, hidden_plays)
    train, val = split_per_user(plays, share=params.validation_share, min_items=MIN_TUNING_ITEMS, seed=params.seed + 1)
    held = held_out_matrix(val, data.plays.shape)
    if hidden is not None:
        held = held + (hidden_plays > 0)
    sub_data = data.with_plays(train, user_tags=drop_pairs(data.user_tags, held.tocsr()))
    if hidden is not None:
        # a song nobody has played has nobody's terms either: the hidden songs lose theirs, as the
        # cold songs they stand for have none (their audio terms stay: the analyzer gives those)
        sub_data = replace(sub_data, term_counts=(sp.diags((~hidden).astype(np.float32)) @ data.term_counts).tocsr())
    rows = np.array([u for u, v in enumerate(val) if len(v)], dtype=np.int64)
    if not len(rows):
        most = int(np.diff(plays.tocsr().indptr).max()) if plays.shape[0] else 0
        return (f"too little data to tune: no listener has {MIN_TUNING_ITEMS} or more items to hold out "
                f"(at most {most}); fitted with the default settings")
    # the grid is scored on at most 800 listeners: the ranking of settings is stable well below that
    rows = np.random.default_rng(params.seed).choice(rows, size=min(800, len(rows)), replace=False)
    rows.sort()
    truth = [val[u] for u in rows]
    heard = ((sub_data.plays[rows] + sub_data.user_tags[rows]) > 0).tocsr()
    # with hidden songs, the warm ranking is over the songs the split's listeners play (the songs
    # nobody plays in it, hidden or cold, cannot be in its truth) and the cold one over the hidden
    warm = None if hidden is None else np.asarray((train > 0).sum(axis=0)).ravel() > 0
    als_trail, fitted = [], []
    for cand in ALS_GRID:
        m = ALS(replace(cand, seed=params.seed)).fit(train)
        fitted.append(m)
        als_trail.append((cand, ndcg_at_k(m.scores(m.user_factors[rows]), heard, truth, allowed=warm)[0]))
    k = int(np.argmax([v for _, v in als_trail]))
    params = replace(params, als=replace(als_trail[k][0], seed=params.seed))
    every = FusionWeights(cf=1, ease=1, knn=1, terms=1, audio=1 if data.audio is not None else 0)
    sub = fit_parts(sub_data, params, every, als=fitted[k], exposure=False)
    parts = sub.source_scores(rows)
    cold = None
    if hidden is not None:
        x = hidden_plays[rows].tocsr()
        truth_cold = [x.indices[x.indptr[i] : x.indptr[i + 1]] for i in range(len(rows))]
        cold = ColdObjective(truth_cold, hidden, params.validation_cold_share)
    audio_terms = data.audio_term_counts is not None and data.audio_term_counts.nnz > 0
    # only the term source changes with the audio terms' weight: the others are scored once
    tried = []
    for a in AUDIO_TERM_GRID if audio_terms else (params.audio_term_weight,):
        if audio_terms:
            sub.terms = TermVectors().fit(sub_data.term_counts, sub_data.audio_term_counts, a)
            parts = {**parts, "terms": sub.source_scores(rows)["terms"]}
        tried.append((a, *tune_weights(parts, heard, truth, np.ones(train.shape[1], bool), allowed=warm, cold=cold)))
    a, chosen, best, trail = max(tried, key=lambda t: t[2])  # the first of equals: the smaller weight
    params = replace(params, audio_term_weight=a)
    validation = {"ndcg10": best, "users": int(len(rows)), "grid": sum(len(t[3]) for t in tried),
                  "als": [{"params": c.__dict__, "ndcg10": v} for c, v in als_trail]}
    if hidden is not None:
        validation["hidden_items"] = int(hidden.sum())
        validation["cold_share"] = cold.share
    if audio_terms:
        validation["audio_term_weight"] = [{"weight": w, "ndcg10": v} for w, _, v, _ in tried]
    return params, chosen, validation


def validation_cold_items(data: Dataset, *, share: float, seed: int) -> np.ndarray | None:
    """Played songs with audio whose plays the validation split hides, so it can see cold songs.

    Parameters
    ----------
    data : Dataset
    share : float
        Share of the played songs with audio (an audio vector or audio terms) to hide.
    seed : int

    Returns
    -------
    numpy.ndarray of bool or None
        Per item, hidden; None where the catalog has no song with audio and no plays (nothing the
        audio sources are needed for) or fewer than 10 played songs with audio to hide from.
    """
    has_audio = np.zeros(data.plays.shape[1], dtype=bool)
    if data.audio is not None:
        has_audio |= data.audio_present
    if data.audio_term_counts is not None:
        has_audio |= np.diff(data.audio_term_counts.tocsr().indptr) > 0
    listeners = np.asarray((data.plays > 0).sum(axis=0)).ravel()
    played = np.flatnonzero(has_audio & (listeners > 0))
    if not (has_audio & (listeners == 0)).any() or len(played) < 10:
        return None
    hidden = np.zeros(len(has_audio), dtype=bool)
    hidden[np.random.default_rng(seed).choice(played, size=max(1, int(round(share * len(played)))), replace=False)] = True
    return hidden


def fit_parts(data: Dataset, params: FitParams, weights: FusionWeights, *, als: ALS | None = None,
              exposure: bool = True) -> Recommender:
    """Fit the scorers that `weights` uses, with fixed settings (no tuning).

    Parameters
    ----------
    data : Dataset
        What to fit on.
    params : FitParams
        Scorer settings.
    weights : FusionWeights
        Sources with weight 0 are not fitted; on catalogs of `params.ann_min_items` items or more
        EASE's weight is set to 0 (its items x items matrix would not fit).
    als : ALS, optional
        Already fitted ALS factors to use (Spark's, or the tuning's) instead of fitting them.
    exposure : bool
        Compute the per-item exposure the playlists' spread needs (not needed while tuning).

    Returns
    -------
    Recommender
    """
    x = data.plays
    als = als or ALS(params.als).fit(x)
    if data.audio is not None:
        listeners = np.asarray((x > 0).sum(axis=0)).ravel()
        factors, placed = place_cold_items(als.item_factors, data.audio, data.audio_present, listeners)
        if placed.any():
            als = ALS.from_factors(als.user_factors, factors, als.params)
    large = x.shape[1] >= params.ann_min_items
    if large and weights.ease:
        weights = replace(weights, ease=0.0)
    ease = EASE(params.ease_lambda, params.ease_min_listeners).fit(x) if weights.ease else None
    knn = ItemKNN(params.knn_k).fit(x) if weights.knn else None
    terms = None
    if weights.terms and (data.term_counts.nnz or (data.audio_term_counts is not None and data.audio_term_counts.nnz)):
        terms = TermVectors().fit(data.term_counts, data.audio_term_counts, params.audio_term_weight)
    audio = None
    if weights.audio and data.audio is not None:
        audio = AudioVectors().fit(data.audio, data.audio_present)
    rec = Recommender(data, params, als, ease, knn, terms, audio, weights)
    if large:
        rec.ann = build_ann(als.item_factors)
    if exposure:
        rec.exposure = rec.compute_exposure()
    return rec


def place_cold_items(item_factors: np.ndarray, audio: np.ndarray, present: np.ndarray, listeners: np.ndarray, *,
                     min_listeners: int = 3, lam: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """ALS factors for items with audio and no listeners, predicted from their audio vectors.

    A ridge regression from audio vectors (CNN embeddings or analysis features) onto the factors
    of items with both, so new songs are scored in the same space as every other item.

    Parameters
    ----------
    item_factors : numpy.ndarray
        Items x factors, as fitted.
    audio : numpy.ndarray
        Items x d audio vectors.
    present : numpy.ndarray of bool
        Items that have audio.
    listeners : numpy.ndarray
        Per item, how many listeners played it.
    min_listeners : int
        Items with at least this many listeners (and audio) train the regression.
    lam : float
        Ridge penalty (the intercept is not shrunk).

    Returns
    -------
    factors : numpy.ndarray
        `item_factors` with the cold items' rows replaced (unchanged where fewer than 20 items train).
    placed : numpy.ndarray of bool
        Which items were placed.
    """
    warm = present & (listeners >= min_listeners)
    cold = present & (listeners == 0)
    if not cold.any() or warm.sum() < 20:
        return item_factors, np.zeros(len(item_factors), dtype=bool)
    f = audio.astype(np.float64)
    mu, sd = f[warm].mean(axis=0), f[warm].std(axis=0) + 1e-9
    xw = np.hstack([(f[warm] - mu) / sd, np.ones((int(warm.sum()), 1))])
    reg = lam * np.eye(xw.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(xw.T @ xw + reg, xw.T @ item_factors[warm].astype(np.float64))
    pred = np.hstack([(f[cold] - mu) / sd, np.ones((int(cold.sum()), 1))]) @ w
    # as long as the items just above them (few listeners): a new song should not outscore the hits
    tail = (listeners >= 1) & (listeners <= min_listeners)
    ref = item_factors[tail] if tail.any() else item_factors[warm]
    norm = float(np.median(np.linalg.norm(ref, axis=1)))
    pred *= norm / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    out = item_factors.copy()
    out[cold] = pred.astype(np.float32)
    return out, cold


def build_ann(item_factors: np.ndarray):
    """hnswlib's HNSW graph over the item factors, inner-product space (chosen over voyager by bench.ann).

    Built single-threaded with a fixed seed: the same graph every time, so playlists are
    reproducible from the saved factors (the index itself is never saved)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=item_factors.shape[1])
    index.init_index(max_elements=len(item_factors), ef_construction=200, M=16, random_seed=0)
    index.add_items(np.ascontiguousarray(item_factors, dtype=np.float32), np.arange(len(item_factors)), num_threads=1)
    return index
