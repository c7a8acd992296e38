"""The analyzer finds embedding models without importing them: entry points or module:function, no torch needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzer.embedding import EmbedderSpec, find_loader, load_embedder
from analyzer.errors import InputError
from conftest import ROOT


class _Fake:
    """A stand-in model: the embedding is (mean, RMS, 1) of the samples, L2-normalised as the schema asks,
    with the file's text as its id."""

    def __init__(self, path: Path) -> None:
        self.model_id = f"fake {path.read_text().strip()}"

    def embed(self, samples, sr):
        x = np.asarray(samples, dtype=np.float64)
        v = np.array([x.mean(), np.sqrt(np.mean(x**2)), 1.0])
        return v / np.linalg.norm(v)


def load_fake(path: Path, *, device: str = "cpu", threads: int | None = None) -> _Fake:
    return _Fake(path)


def not_a_loader(path, *, device="cpu", threads=None):
    return object()


def test_the_analyzer_never_imports_a_model_package_or_torch():
    """Statically: no module of analyzer/ names cnn, recommender or torch in an import."""
    pattern = re.compile(r"^\s*(from|import)\s+(cnn|recommender|torch)\b", re.M)
    offenders = [p.name for p in (ROOT / "analyzer").glob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert not offenders


def test_a_whole_analysis_loads_neither_torch_nor_cnn(tmp_path):
    from fixtures.synth import chord_progression
    import soundfile as sf

    x, sr, _ = chord_progression(key="D", mode="major", seconds=6)
    wav = tmp_path / "c.wav"
    sf.write(wav, x, sr)
    code = ("import sys, io, contextlib\n"
            "from analyzer.cli import main\n"
            f"sys.argv = ['analyze', {str(wav)!r}]\n"
            "out = io.StringIO()\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cnn', 'recommender'))\n"
            "sys.stderr.write('LOADED ' + repr(loaded) + '\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert json.loads(r.stdout)["track"]["duration"] > 5
    assert "LOADED []" in r.stderr.decode()


def test_a_module_function_loader_is_used_and_loaded_once_per_resources(tmp_path):
    from analyzer.run.batch import Resources

    model = tmp_path / "m.txt"
    model.write_text("v1")
    spec = EmbedderSpec(path=model, kind="test_embedding:load_fake")
    resources = Resources(spec)
    e = resources.embedder
    assert e.model_id == "fake v1" and resources.embedder is e
    assert load_embedder(spec) is not e  # the resources object holds it, not a module-level cache
    np.testing.assert_allclose(e.embed(np.ones(10), 22050), np.ones(3) / np.sqrt(3))


def test_the_cnn_is_registered_under_its_entry_point():
    pytest.importorskip("torch", reason="the cnn embedder needs torch (the cnn extra)")
    from cnn.embedder import load

    assert find_loader("cnn") is load


@pytest.mark.parametrize(("kind", "message"), [
    ("nope", "no such embedder is installed"),
    ("no_such_module_xyz:load", "cannot load it"),
    ("test_embedding:missing", "cannot load it"),
    ("test_embedding:not_a_loader", "not an embedder"),
])
def test_unusable_embedders_are_one_line_errors(tmp_path, kind, message):
    model = tmp_path / "m.txt"
    model.write_text("v1")
    with pytest.raises(InputError, match=message) as err:
        load_embedder(EmbedderSpec(path=model, kind=kind))
    assert "\n" not in str(err.value)


def test_a_missing_model_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_embedder(EmbedderSpec(path=tmp_path / "absent.safetensors"))


def test_analyze_writes_the_embedding_of_any_embedder(tmp_path):
    """The CLI end to end with a loader given as module:function, in worker processes (--jobs 2)."""
    from fixtures.synth import chord_progression
    import soundfile as sf

    src = tmp_path / "in"
    src.mkdir()
    for k in ("D", "E"):
        x, sr, _ = chord_progression(key=k, mode="major", seconds=4)
        sf.write(src / f"{k}.wav", x, sr)
    model = tmp_path / "m.txt"
    model.write_text("v7")
    env_code = ("import sys; sys.path.insert(0, 'tests'); from analyzer.cli import main; main()")
    args = [str(src), "-o", str(tmp_path / "out"), "--model", str(model), "--embedder", "test_embedding:load_fake",
            "--jobs", "2"]
    r = subprocess.run([sys.executable, "-c", env_code, *args], capture_output=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    for k in ("D", "E"):
        doc = json.loads((tmp_path / "out" / f"{k}.json").read_text())
        assert doc["embedding_model"] == "fake v7" and len(doc["embedding"]) == 3
    # the same model: up to date; another model id: analysed again
    r = subprocess.run([sys.executable, "-c", env_code, *args], capture_output=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "0 analyzed, 0 failed, 2 up to date" in r.stderr.decode(), r.stderr.decode()
    model.write_text("v8")
    r = subprocess.run([sys.executable, "-c", env_code, *args], capture_output=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "2 analyzed, 0 failed, 0 up to date" in r.stderr.decode(), r.stderr.decode()
    assert json.loads((tmp_path / "out" / "D.json").read_text())["embedding_model"] == "fake v8"
