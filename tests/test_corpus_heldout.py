"""The held-out music21 works are never rendered, tuned on or tested with (bench/corpus.py)."""

from __future__ import annotations

import re

import pytest

from bench.corpus import HELDOUT_PREFIXES, corpus_relative, is_heldout, usable
from conftest import ROOT


@pytest.mark.parametrize("name", [
    "bach/bwv1.6", "bach/bwv1.6.mxl", "/x/site-packages/music21/corpus/bach/bwv1.6.mxl",
    "beethoven/opus18no1/movement2.mxl", "handel/rinaldo/Lascia_chio_pianga", "haydn/opus1no1/movement5.mxl",
    "chopin/mazurka06-2.krn", "C:\\py\\music21\\corpus\\schubert\\Lindenbaum.mxl",
])
def test_held_out_works_are_recognised_by_prefix(name):
    assert is_heldout(name)


@pytest.mark.parametrize("name", [
    "bach/bwv10.7", "bach/bwv101.7.mxl", "beethoven/opus18no3.mxl", "monteverdi/madrigal.3.2.mxl",
    "/x/music21/corpus/haydn/opus74no1/movement1.mxl", "mozart/k156",
])
def test_other_works_are_usable(name):
    assert not is_heldout(name)
    assert usable([name]) == [name]


def test_corpus_relative():
    assert corpus_relative("/a/music21/corpus/bach/bwv1.6.mxl") == "bach/bwv1.6.mxl"
    assert corpus_relative("bach/bwv1.6") == "bach/bwv1.6"


def test_the_identification_negatives_hold_no_held_out_work():
    from bench.m21 import NEGATIVE_PIECES, render

    assert not [p for p in NEGATIVE_PIECES if is_heldout(p)]
    for prefix in HELDOUT_PREFIXES:
        with pytest.raises(ValueError, match="held-out"):
            render(prefix)


def test_the_cold_start_selection_holds_no_held_out_work():
    pytest.importorskip("music21", reason="the cold-start selection reads the music21 corpus (bench extra)")
    from bench.coldstart_tracks import pieces

    chosen = pieces()
    assert chosen
    assert not [p for _, p in chosen if is_heldout(p)]


def test_nothing_reads_the_corpus_around_the_filter():
    """Every direct use of music21's corpus lives in bench/corpus.py or behind its check in bench/m21.py."""
    direct = re.compile(r"\bcorpus\.(getComposer|getWork|parse|search|getPaths)\b")
    allowed = {"bench/corpus.py", "bench/m21.py"}
    offenders = []
    for folder in ("analyzer", "bench", "cnn", "fixtures", "recommender", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in allowed and direct.search(path.read_text(encoding="utf-8")):
                offenders.append(rel)
    assert not offenders, f"read the music21 corpus through bench/corpus.py: {offenders}"


def test_the_development_renders_hold_no_held_out_work(tmp_path):
    from bench.devrenders import PIECES, plan, render

    assert not [p for p, _ in PIECES if is_heldout(p)]
    for prefix in HELDOUT_PREFIXES:
        with pytest.raises(ValueError, match="held-out"):
            render(plan(prefix, "4/4"), tmp_path)
    assert not list(tmp_path.iterdir())
