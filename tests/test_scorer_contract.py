"""The scorer contract, after implicit's `recommender_base_test.py`: every scorer and both playlist
paths pass the same checks.

- a batch of listeners scores as each listener alone;
- scoring a subset of items gives those items' columns of the whole catalog's scores;
- the top N (implicit's `recommend`: ids and scores, best first) never holds what a listener heard;
- the ANN path (hnswlib candidates) equals the exact path on a small catalog at full recall.

The data are synthesized here: three taste groups of listeners and items, tags per group, audio
vectors near each group's centre, listeners who tagged items they never played.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

# float32 scores: a matrix product over a batch and over one row may sum in a different order
# (BLAS blocks them differently), so agreement is to float32 rounding of sums of ~100 terms
RTOL, ATOL = 1e-5, 1e-6
# fused and standardized scores of the two paths: the ANN path standardizes against the catalog in
# a shuffled order, so means and spreads differ in their last bits, scaled up by 1/sd
FUSED_ATOL = 1e-4

N_USERS, N_ITEMS, N_TERMS = 60, 150, 12


@pytest.fixture(scope="module")
def data():
    from recommender.dataset import Dataset

    rng = np.random.default_rng(11)
    group_items = [np.flatnonzero(np.arange(N_ITEMS) % 3 == g) for g in range(3)]
    rows, cols, vals, tag_rows, tag_cols = [], [], [], [], []
    for u in range(N_USERS):
        mine = rng.choice(group_items[u % 3], size=15, replace=False)
        other = rng.choice(np.setdiff1d(np.arange(N_ITEMS), group_items[u % 3]), size=2, replace=False)
        for i in np.concatenate([mine, other]):
            rows.append(u), cols.append(i), vals.append(float(rng.integers(1, 60)))
        # tagged, never played: heard all the same
        for i in rng.choice(np.setdiff1d(group_items[u % 3], mine), size=2, replace=False):
            tag_rows.append(u), tag_cols.append(i)
    plays = sp.csr_matrix((vals, (rows, cols)), shape=(N_USERS, N_ITEMS), dtype=np.float32)
    user_tags = sp.csr_matrix((np.ones(len(tag_rows)), (tag_rows, tag_cols)), shape=(N_USERS, N_ITEMS), dtype=np.float32)
    t_rows, t_cols, t_vals = [], [], []
    for i in range(N_ITEMS):
        g = i % 3
        for t in {4 * g + int(rng.integers(0, 4)), 4 * g + int(rng.integers(0, 4)), int(rng.integers(0, N_TERMS))}:
            t_rows.append(i), t_cols.append(t), t_vals.append(float(rng.integers(1, 5)))
    term_counts = sp.csr_matrix((t_vals, (t_rows, t_cols)), shape=(N_ITEMS, N_TERMS), dtype=np.float32)
    centres = rng.standard_normal((3, 8))
    audio = (centres[np.arange(N_ITEMS) % 3] + 0.5 * rng.standard_normal((N_ITEMS, 8))).astype(np.float32)
    present = np.ones(N_ITEMS, dtype=bool)
    present[::17] = False
    items = [f"i{i:03d}" for i in range(N_ITEMS)]
    artists = [f"a{i // 3:02d}" for i in range(N_ITEMS)]  # tracks, three per artist
    return Dataset([f"u{u:02d}" for u in range(N_USERS)], items, items, artists, plays,
                   [f"term{t}" for t in range(N_TERMS)], term_counts, user_tags, audio, present)


@pytest.fixture(scope="module")
def rec(data):
    from recommender.fit import fit_parts
    from recommender.fusion import FusionWeights
    from recommender.model import FitParams
    from recommender.models import ALSParams

    params = FitParams(als=ALSParams(factors=16, regularization=1.0, alpha=2.0, iterations=8, weighting="log"),
                       ease_min_listeners=1, knn_k=20)
    # every source on, so every scorer takes part in both paths
    return fit_parts(data, params, FusionWeights(cf=1.0, ease=0.5, knn=0.5, terms=0.5, audio=0.2))


SCORERS = ("als", "ease", "knn", "terms", "audio", "popularity")


def _scorer(rec, data, name):
    """The scorer as a function (listener rows, items or None) -> scores, each through its own `scores`."""
    from recommender.models import Popularity

    x = data.plays
    if name == "als":
        return lambda rows, items=None: rec.als.scores(rec.als.user_factors[rows], items)
    if name == "terms":
        return lambda rows, items=None: rec.terms.scores(x[rows], None, items)
    model = {"ease": rec.ease, "knn": rec.knn, "audio": rec.audio, "popularity": Popularity().fit(x)}[name]
    return lambda rows, items=None: model.scores(x[rows], items)


@pytest.mark.parametrize("name", SCORERS)
def test_a_batch_scores_as_each_listener_alone(rec, data, name):
    score = _scorer(rec, data, name)
    rows = np.arange(N_USERS)
    batch = score(rows)
    assert batch.shape == (N_USERS, N_ITEMS) and batch.dtype == np.float32
    single = np.vstack([score(np.array([r])) for r in rows])
    np.testing.assert_allclose(batch, single, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", SCORERS)
def test_scoring_some_items_gives_their_columns(rec, data, name):
    score = _scorer(rec, data, name)
    rows = np.array([0, 7, 31])
    items = np.random.default_rng(2).permutation(N_ITEMS)[:40]
    np.testing.assert_allclose(score(rows, items), score(rows)[:, items], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", SCORERS)
def test_top_n_is_best_first_and_never_what_was_heard(rec, data, name):
    from recommender.evaluate import top_n

    rows = np.arange(N_USERS)
    heard = rec.heard(rows)
    ids, scores = top_n(_scorer(rec, data, name)(rows), heard, 10)
    assert ids.shape == scores.shape == (N_USERS, 10)
    assert np.all(np.diff(scores, axis=1) <= 0)
    for u in rows:
        assert not set(ids[u]) & set(heard[u].indices)
    one_ids, one_scores = top_n(_scorer(rec, data, name)(rows[:1]), heard[:1], 10)
    np.testing.assert_allclose(one_scores[0], scores[0], rtol=RTOL, atol=ATOL)


def _ann(rec):
    from recommender.fit import build_ann

    # full recall: every item is a candidate, the index searched with ef above the catalog's size
    return replace(rec, ann=build_ann(rec.als.item_factors), params=replace(rec.params, ann_candidates=N_ITEMS))


@pytest.mark.parametrize("path", ("exact", "ann"))
def test_playlists_never_hold_what_was_heard_and_a_batch_equals_one_at_a_time(rec, path):
    from recommender.model import PlaylistParams

    r = rec if path == "exact" else _ann(rec)
    rows = np.arange(N_USERS)
    params = PlaylistParams(n=12)
    batch = r.playlists(rows, params)
    heard = r.heard(rows)
    for u, picks in zip(rows, batch):
        assert len(picks) == 12
        assert not {p.item for p in picks} & set(heard[u].indices)
    for u in (0, 1, 29, 59):
        (alone,) = r.playlists(np.array([u]), params)
        assert [p.item for p in alone] == [p.item for p in batch[u]]
        np.testing.assert_allclose([p.score for p in alone], [p.score for p in batch[u]], atol=FUSED_ATOL)


def test_ann_path_equals_exact_path_at_full_recall(rec):
    from recommender.model import PlaylistParams

    ann = _ann(rec)
    rows = np.arange(N_USERS)
    for params in (PlaylistParams(n=12), PlaylistParams(n=20, fresh_share=0.3, spread=0.0)):
        exact, approx = rec.playlists(rows, params), ann.playlists(rows, params)
        for a, b in zip(exact, approx):
            assert [p.item for p in a] == [p.item for p in b]
            assert [p.fresh for p in a] == [p.fresh for p in b]
            np.testing.assert_allclose([p.score for p in a], [p.score for p in b], atol=FUSED_ATOL)
            for pa, pb in zip(a, b):
                assert set(pa.sources) == set(pb.sources) == {"cf", "ease", "knn", "terms", "audio"}
                np.testing.assert_allclose([pa.sources[k] for k in pa.sources], [pb.sources[k] for k in pa.sources],
                                           atol=FUSED_ATOL)


def test_both_paths_score_through_one_interface(rec, monkeypatch):
    """Every source of both paths comes from `Recommender.source_scores`: no second scoring path."""
    from recommender.model import PlaylistParams, Recommender

    calls = []
    original = Recommender.source_scores

    def spy(self, rows, items=None):
        calls.append(items is None)
        return original(self, rows, items)

    monkeypatch.setattr(Recommender, "source_scores", spy)
    rec.playlists(np.arange(3), PlaylistParams(n=5))
    _ann(rec).playlists(np.arange(3), PlaylistParams(n=5))
    assert calls == [True, False, False, False]
