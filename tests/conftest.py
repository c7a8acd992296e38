"""Shared fixtures: synthesized audio with exact truth, models loaded once, analyses cached."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures import synth  # noqa: E402


def eval_dir() -> Path:
    return Path(os.environ.get("ANALYZER_EVAL_DIR", ROOT.parent / "shared" / "eval"))


@pytest.fixture(scope="session")
def fx(tmp_path_factory) -> dict:
    """The synthesized fixture set: name -> {"path": ..., truth...}."""
    return synth.make_all(tmp_path_factory.mktemp("fx"))


@pytest.fixture(scope="session")
def models():
    from analyzer.stages.features import Models

    return Models()


@pytest.fixture(scope="session")
def library_template(tmp_path_factory, models):
    """One real analysis document, the template of `_library_fakes`' quick analysis (also for servers
    it starts: ANALYZE_FAKE_TEMPLATE is set for the session)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _library_fakes

    path = _library_fakes.make_template(tmp_path_factory.mktemp("template") / "template.json", models)
    os.environ["ANALYZE_FAKE_TEMPLATE"] = str(path)
    return path


@pytest.fixture(scope="session")
def analyze_file(models):
    """path -> (document dict, Analysis), cached per path for the session."""
    from analyzer.stages.audio import decode
    from analyzer.document import build_document
    from analyzer.pipeline import analyze

    cache: dict[str, tuple] = {}

    def run(path):
        key = str(path)
        if key not in cache:
            audio = decode(path)
            an = analyze(audio, models=models)
            cache[key] = (build_document(an, timestamp=int(time.time()), analysis_time_s=0.0), an)
        return cache[key]

    return run


def song_or_skip(fx: dict) -> dict:
    if "song" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed: the rendered song fixture is missing")
    return fx["song"]


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the session (tests/_postgres.py); skipped where PostgreSQL or
    psycopg is missing, except in CI (CI=true), where that fails."""
    from _postgres import Cluster

    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
