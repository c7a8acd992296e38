"""The Python API (`analyzer.analyze_file`, `analyze_files`, `analyze_audio`): the CLI's documents, from Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer.run.batch import Resources
from analyzer.document import validate
from analyzer.errors import AnalyzerError, ParameterError
from fixtures import synth

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("timestamp", "analysis_time", "platform")  # meta fields that differ between two runs


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=12)
    path = tmp_path_factory.mktemp("api") / "clicks.wav"
    synth.encode(path, x, sr)
    return path


@pytest.fixture(scope="module")
def resources() -> Resources:
    return Resources()


def _stable(doc: dict) -> dict:
    return {**doc, "meta": {k: v for k, v in doc["meta"].items() if k not in VOLATILE}}


def test_import_stays_cheap_and_the_api_loads_on_first_use():
    code = "import sys, analyzer; print('numpy' in sys.modules); analyzer.analyze_file; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "True"]
    assert {"analyze_file", "analyze_files", "analyze_audio"} <= set(dir(analyzer))
    with pytest.raises(AttributeError):
        analyzer.no_such_function  # noqa: B018


def test_analyze_file_is_the_cli_document(clicks, resources):
    doc = analyzer.analyze_file(clicks, resources=resources)
    validate(doc)
    cli = subprocess.run([sys.executable, "-c", "from analyzer.cli import main; main()", str(clicks)],
                         capture_output=True, cwd=ROOT, timeout=300)
    assert cli.returncode == 0, cli.stderr.decode()
    assert _stable(doc) == _stable(json.loads(cli.stdout))
    excerpt = analyzer.analyze_file(clicks, offset=2.0, duration=5.0, resources=resources)
    assert excerpt["track"]["duration"] == pytest.approx(5.0, abs=0.05)
    with pytest.raises(ParameterError):
        analyzer.analyze_file(clicks, offset=-1)
    with pytest.raises(AnalyzerError, match="no such file"):
        analyzer.analyze_file(clicks.parent / "missing.wav", resources=resources)


def test_analyze_files_yields_documents_and_errors_in_order(clicks, tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    (folder / "a.wav").write_bytes(clicks.read_bytes())
    (folder / "b.mp3").write_bytes(b"not audio at all" * 100)
    results = list(analyzer.analyze_files(folder))
    assert [p.name for p, _ in results] == ["a.wav", "b.mp3"]
    assert results[0][1]["track"]["tempo"] == pytest.approx(120, rel=0.04)
    assert isinstance(results[1][1], AnalyzerError) and "b.mp3" in str(results[1][1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalyzerError, match="no audio files"):
        list(analyzer.analyze_files(tmp_path / "empty"))


def test_analyze_audio_keeps_the_arrays(clicks, resources):
    from analyzer.pipeline import Analysis

    an = analyzer.analyze_audio(clicks, resources=resources)
    assert isinstance(an, Analysis)
    assert an.audio.samples.dtype == np.float32 and an.audio.sr > 0
    assert an.rhythm.tempo_bpm == pytest.approx(120, rel=0.04)
