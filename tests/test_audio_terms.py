"""Terms heard in the audio (the analyzer's `terms`) as an audio-derived part of the item term vectors:
ingested, stored apart from people's terms, weighted on the validation split, shown with their source."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from _worlds import taste_groups

GENRES = ("metal", "jazz", "pop")
# what a tagger might hear in each genre (the first is the genre's own name, which people use too)
HEARD = {"metal": ("metal", "guitar", "loud"), "jazz": ("jazz", "saxophone", "swing"), "pop": ("pop", "dance", "female")}


def _cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "recommender.cli", *map(str, args)], capture_output=True, input=stdin)


def _doc(name: str, terms: list[dict] | None) -> dict:
    seg = {"start": 0.0, "duration": 1.0, "confidence": 1.0, "loudness_start": -30, "loudness_max": -10,
           "loudness_max_time": 0.1, "pitches": [0.5] * 12, "timbre": [40.0, 1.0] + [0.0] * 10}
    doc = {"meta": {"filename": f"/music/{name}.mp3", "artist": "A", "title": name},
           "track": {"tempo": 120.0, "loudness": -10.0, "mode": 1, "time_signature": 4, "key": 2, "duration": 1.0,
                     "tempo_confidence": 0.5}, "segments": [seg]}
    if terms is not None:
        doc["terms"] = terms
    return doc


def _term(name: str, p: float, tagger: str = "msd") -> dict:
    return {"name": name, "frequency": p, "weight": 1.0, "tagger": tagger}


def test_ingest_stores_the_heard_terms_normalized_and_replaces_them(tmp_path):
    docs = [_doc("a", [_term("Hard  Rock", 0.4, "msd"), _term("rock", 0.7, "mtt"), _term("rock", 0.5, "msd")]),
            _doc("b", None),
            _doc("c", [_term("piano", 1.5)])]  # not a probability: the document is refused, the batch goes on
    r = _cli("ingest", "--model", tmp_path / "m", stdin="\n".join(json.dumps(d) for d in docs).encode())
    assert r.returncode == 0, r.stderr
    assert b"2 analyses ingested, 1 skipped" in r.stderr and b"stdin:3" in r.stderr and b"not a probability" in r.stderr
    db = tmp_path / "m" / "catalog.db"
    with sqlite3.connect(db) as c:
        rows = sorted(c.execute("SELECT i.name, t.term, t.probability FROM audio_terms t JOIN items i ON i.id = t.item"))
    # one name per term (both taggers' "rock": the higher probability), lower-cased, spaces collapsed
    assert rows == [("a", "hard rock", pytest.approx(0.4)), ("a", "rock", pytest.approx(0.7))]
    # a new analysis of "a" replaces its terms; one without terms leaves them as they were
    again = [_doc("a", [_term("jazz", 0.9)]), _doc("a", None)]
    assert _cli("ingest", "--model", tmp_path / "m", stdin="\n".join(json.dumps(d) for d in again).encode()).returncode == 0
    with sqlite3.connect(db) as c:
        rows = sorted(c.execute("SELECT term, probability FROM audio_terms"))
    assert rows == [("jazz", pytest.approx(0.9))]


def test_a_catalog_made_before_the_audio_terms_gains_their_table(tmp_path):
    from recommender.store import Store

    st = Store(tmp_path / "m", create=True)
    st.close()
    with sqlite3.connect(tmp_path / "m" / "catalog.db") as c:
        c.execute("DROP TABLE audio_terms")  # as a catalog written by the previous release
    st = Store(tmp_path / "m")
    assert st.counts()["audio_terms"] == 0
    st.close()


def _world(seed: int = 3):
    """90 listeners in 3 taste groups; 150 tracks, the last 30 with no plays; people's tags on the first
    60 only; every track's audio terms (what a tagger hears in its genre)."""
    from recommender.dataset import Dataset

    rng = np.random.default_rng(seed)
    n_users, n_items, n_cold = 90, 150, 30
    x, genre = taste_groups(rng, n_users, n_items, n_cold)
    vocab = sorted({t for g in GENRES for t in HEARD[g]} | {"rock", "sad", "90s"})
    ti = {t: i for i, t in enumerate(vocab)}
    tags = sp.lil_matrix((n_items, len(vocab)), dtype=np.float32)
    heard = sp.lil_matrix((n_items, len(vocab)), dtype=np.float32)
    for i in range(n_items):
        g = GENRES[genre[i]]
        if i < 60:
            tags[i, ti[g]] = float(rng.integers(1, 20))
        for t in HEARD[g]:
            heard[i, ti[t]] = float(rng.uniform(0.3, 0.9))
    ids = [f"i{i}" for i in range(n_items)]
    ds = Dataset([f"u{i}" for i in range(n_users)], ids, ids, ids, x, vocab, tags.tocsr(),
                 sp.csr_matrix((n_users, n_items), dtype=np.float32), audio_term_counts=heard.tocsr())
    return ds, genre, n_items - n_cold


def test_audio_terms_reach_items_nobody_tagged_or_played():
    """The term source alone ranks, for each listener, the untagged items (60..149, cold ones included)
    of their taste first: people's "jazz" on what they play meets the taggers' "jazz" on a new song."""
    from recommender.fit import fit
    from recommender.fusion import FusionWeights
    from recommender.model import FitParams

    ds, genre, _ = _world()
    weights = FusionWeights(cf=1, ease=0, knn=0, terms=1, audio=0)
    rec = fit(ds, FitParams(audio_term_weight=1.0), tune=False, weights=weights)
    untagged = np.arange(60, len(genre))
    assert rec.terms.has_terms[untagged].all()
    s = rec.source_scores(np.arange(90), untagged)["terms"]
    hits = np.mean([np.mean(genre[untagged[np.argsort(-s[u])[:10]]] == u % 3) for u in range(90)])
    assert hits >= 0.95, hits
    # without the audio part those items have no term vector at all
    plain = fit(ds, FitParams(audio_term_weight=0.0), tune=False, weights=weights)
    assert not plain.terms.has_terms[untagged].any()


def test_the_audio_terms_weight_is_chosen_on_the_validation_split():
    from recommender.fit import fit
    from recommender.model import AUDIO_TERM_GRID

    ds, _, _ = _world()
    rec = fit(ds)
    tried = rec.validation["audio_term_weight"]
    assert [t["weight"] for t in tried] == list(AUDIO_TERM_GRID)
    best = max(tried, key=lambda t: t["ndcg10"])
    assert rec.params.audio_term_weight == best["weight"]
    assert rec.validation["ndcg10"] == pytest.approx(best["ndcg10"])
    # a catalog without audio terms tries nothing new
    from dataclasses import replace

    plain = fit(replace(ds, audio_term_counts=None))
    assert "audio_term_weight" not in plain.validation


def test_the_model_keeps_the_audio_terms_and_says_where_a_term_comes_from(tmp_path):
    from recommender.explain import explain, top_terms
    from recommender.fit import fit
    from recommender.fusion import FusionWeights
    from recommender.model import FitParams, PlaylistParams
    from recommender.persist import load, save

    ds, genre, _ = _world()
    rec = fit(ds, FitParams(audio_term_weight=0.5), tune=False, weights=FusionWeights(cf=0.1, ease=0, knn=0, terms=1, audio=0))
    save(rec, tmp_path)
    back = load(tmp_path)
    assert back.params.audio_term_weight == 0.5
    assert (back.data.audio_term_counts != ds.audio_term_counts).nnz == 0
    assert abs(back.terms.vectors - rec.terms.vectors).max() < 1e-6
    # item 1 (jazz) carries people's "jazz" and the taggers' "jazz", "saxophone", "swing"; item 61 (jazz)
    # the taggers' only
    t1 = {t["term"]: t for t in top_terms(back, "i1", 10)}
    assert t1["jazz"]["source"] == "both" and t1["saxophone"]["source"] == "audio"
    assert 0 < t1["saxophone"]["frequency"] <= 1 and max(t["weight"] for t in t1.values()) == 1.0
    t61 = top_terms(back, "i61", 10)
    assert {t["term"] for t in t61} == set(HEARD["jazz"]) and {t["source"] for t in t61} == {"audio"}
    # a listener of jazz is told that an untagged pick sounds like what they play
    picks = back.playlists(np.array([1]), PlaylistParams(n=10, fresh_share=0.0, spread=0.0))[0]
    out = explain(back, 1, picks)
    untagged = [o for o in out if int(o["id"][1:]) >= 60]
    assert untagged and all("(heard in its audio)" in o["reason"] for o in untagged)


def test_audio_term_probabilities_outside_0_1_are_refused_on_load(tmp_path):
    from safetensors.numpy import load_file, save_file

    from analyzer.errors import InputError
    from recommender.fit import fit
    from recommender.fusion import FusionWeights
    from recommender.model import FitParams
    from recommender.persist import load, save

    ds, _, _ = _world()
    save(fit(ds, FitParams(), tune=False, weights=FusionWeights(cf=1, ease=0, knn=0, terms=1, audio=0)), tmp_path)
    arrays = load_file(str(tmp_path / "arrays.safetensors"))
    arrays["audio_term_counts.data"][0] = 7.0
    save_file(arrays, str(tmp_path / "arrays.safetensors"))
    with pytest.raises(InputError, match="audio_term_counts"):
        load(tmp_path)


def test_the_validation_hides_played_songs_with_audio_only_where_the_catalog_has_cold_songs():
    from dataclasses import replace

    from recommender.fit import fit, validation_cold_items

    ds, _, first_cold = _world()
    listeners = np.asarray((ds.plays > 0).sum(axis=0)).ravel()
    hidden = validation_cold_items(ds, share=0.1, seed=0)
    # a tenth of the 120 played songs (all have audio terms), every one of them played
    assert hidden is not None and hidden.sum() == 12 and (listeners[hidden] > 0).all()
    assert not hidden[first_cold:].any()
    assert (validation_cold_items(ds, share=0.1, seed=0) == hidden).all()  # seeded
    # no song without plays: nothing the audio sources are needed for, the split is the plain one
    played_only = replace(ds, audio_term_counts=ds.audio_term_counts[:first_cold].tocsr(), plays=ds.plays[:, :first_cold].tocsr(),
                          items=ds.items[:first_cold], item_names=ds.item_names[:first_cold],
                          item_artists=ds.item_artists[:first_cold], term_counts=ds.term_counts[:first_cold].tocsr(),
                          user_tags=ds.user_tags[:, :first_cold].tocsr())
    assert validation_cold_items(played_only, share=0.1, seed=0) is None
    # without audio of any kind: None too
    assert validation_cold_items(replace(ds, audio_term_counts=None), share=0.1, seed=0) is None
    rec = fit(ds)
    assert rec.validation["hidden_items"] == 12 and rec.validation["cold_share"] == pytest.approx(0.1)
