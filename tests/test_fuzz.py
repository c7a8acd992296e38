"""Fuzzing the places hostile input enters: the decoder, the table importers and the model loaders.

Not in the default run (marker `fuzz`): `python -m pytest -m fuzz` runs each target on
FUZZ_EXAMPLES inputs (default 300; bench/RESULTS.md records a run of thousands).  The property
is the same everywhere: an input is either accepted or refused with the project's own error
(`AnalyzerError`, one line, no traceback); any other exception, a crash or a hang is a bug.
Inputs are random bytes, and real files with bytes flipped, inserted or cut, so the fuzzer
gets past the first header check.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from analyzer.errors import AnalyzerError  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
pytestmark = pytest.mark.fuzz


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with a few bytes flipped, a run inserted or deleted, or its end cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        else:
            del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def _seed_audio(tmp_path_factory) -> dict[str, bytes]:
    """Small real files of every container the decoder meets."""
    import soundfile as sf

    from fixtures.synth import encode

    d = tmp_path_factory.mktemp("seeds")
    t = np.arange(22050) / 22050
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    seeds = {}
    for ext in ("wav", "flac", "mp3", "ogg"):
        p = d / f"seed.{ext}"
        try:
            if ext in ("wav", "flac"):
                sf.write(p, x, 22050)
            else:
                encode(p, x, 22050)
        except Exception:  # noqa: BLE001 - an encoder missing here only narrows the seeds
            continue
        seeds[ext] = p.read_bytes()
    return seeds


@pytest.fixture(scope="module")
def audio_seeds(tmp_path_factory):
    return _seed_audio(tmp_path_factory)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_decoder_accepts_or_refuses(audio_seeds, work):
    from analyzer.stages.audio import DecodeParams, decode

    assert audio_seeds
    kinds = sorted(audio_seeds)
    params = DecodeParams(min_duration_s=0.1, max_duration_s=60.0)

    @FUZZ
    @given(st.data())
    def run(data):
        kind = data.draw(st.sampled_from(kinds + ["random"]))
        blob = data.draw(st.binary(max_size=4096)) if kind == "random" else data.draw(mutated(audio_seeds[kind]))
        path = work / f"x.{kind if kind != 'random' else data.draw(st.sampled_from(kinds))}"
        path.write_bytes(blob)
        try:
            audio = decode(path, params=params)
        except AnalyzerError:
            return
        assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all()

    run()


def _table_text(data, header: list[str]) -> bytes:
    rows = data.draw(st.lists(st.lists(st.one_of(
        st.text(max_size=12), st.sampled_from(["1", "0", "-3", "1e39", "nan", "inf", "2.5", "", "\x00", "\r"]),
    ), min_size=0, max_size=4), max_size=20))
    sep = data.draw(st.sampled_from(["\t", ",", ";", " "]))
    end = data.draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(sep.join(r) for r in [header] + rows)
    enc = data.draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    try:
        return text.encode(enc)
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def test_table_importers_accept_or_refuse(work):
    from recommender.data import read_plays, read_terms

    @FUZZ
    @given(st.data())
    def run(data):
        target = data.draw(st.sampled_from(["plays", "terms"]))
        if data.draw(st.booleans()):
            blob = data.draw(st.binary(max_size=2048))
        else:
            header = ["user", "item", "plays"] if target == "plays" else ["item", "term", "weight"]
            blob = _table_text(data, header)
        path = work / "table.tsv"
        path.write_bytes(blob)
        try:
            rows, _problems = (read_plays if target == "plays" else read_terms)(path)
        except AnalyzerError:
            return
        for r in rows:
            value = r.plays if target == "plays" else r.weight
            assert np.isfinite(value) and abs(value) <= 1e15

    run()


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cnn.model import AudioCNN, CNNConfig, save

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cnn") / "small.safetensors"
    save(AudioCNN(CNNConfig(channels=(8, 8, 8), n_factors=4, embedding_dim=8, hidden=16)), path)
    return path.read_bytes()


def test_cnn_loader_accepts_or_refuses(cnn_file, work):
    from cnn.model import load

    header_len = int.from_bytes(cnn_file[:8], "little")
    header = json.loads(cnn_file[8 : 8 + header_len])

    @FUZZ
    @given(st.data())
    def run(data):
        how = data.draw(st.sampled_from(["bytes", "manifest", "random"]))
        if how == "random":
            blob = data.draw(st.binary(max_size=1024))
        elif how == "bytes":
            blob = data.draw(mutated(cnn_file))
        else:
            # a valid file whose manifest values are replaced by hostile ones
            h = json.loads(json.dumps(header))
            meta = h.get("__metadata__", {})
            key = data.draw(st.sampled_from(sorted(meta) or ["x"]))
            meta[key] = data.draw(st.one_of(st.text(max_size=40), st.just('{"n_mels": -5}'),
                                            st.just('{"channels": [1000000, 1000000, 1000000]}'),
                                            st.just("[]"), st.just("null")))
            h["__metadata__"] = meta
            hb = json.dumps(h).encode()
            hb += b" " * (-len(hb) % 8)
            blob = len(hb).to_bytes(8, "little") + hb + cnn_file[8 + header_len :]
        path = work / "model.safetensors"
        path.write_bytes(blob)
        try:
            load(path)
        except AnalyzerError:
            return

    run()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A small fitted model folder, made with the CLI as a user would."""
    import subprocess
    import sys

    rng = np.random.default_rng(1)
    d = tmp_path_factory.mktemp("rec")
    lines = ["user\titem\tplays"] + [f"u{u}\ti{int(i)}\t{int(rng.integers(1, 50))}"
                                     for u in range(30) for i in rng.choice(30, size=8, replace=False)]
    (d / "plays.tsv").write_text("\n".join(lines) + "\n")
    model = d / "model"
    for args in (["import-plays", d / "plays.tsv", "--model", model], ["fit", "--model", model, "--no-tune"]):
        r = subprocess.run([sys.executable, "-m", "recommender.cli", *map(str, args)], capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
    return model


def test_recommender_model_loader_accepts_or_refuses(model_folder, work):
    from recommender.persist import load

    version = sorted(p for p in (model_folder / "models").iterdir() if p.is_dir() and p.name.startswith("v"))[-1]
    arrays = (version / "arrays.safetensors").read_bytes()
    manifest = (version / "manifest.json").read_bytes()

    @FUZZ
    @given(st.data())
    def run(data):
        target = work / "model"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(model_folder, target)
        v = target / "models" / version.name
        which = data.draw(st.sampled_from(["arrays", "manifest"]))
        if which == "arrays":
            (v / "arrays.safetensors").write_bytes(data.draw(mutated(arrays)))
        else:
            (v / "manifest.json").write_bytes(data.draw(mutated(manifest)))
        try:
            load(target)
        except AnalyzerError:
            return

    run()


def test_timbre_basis_loader_accepts_or_refuses(work):
    from analyzer.stages.timbre import BASIS_PATH, _load_basis, load_basis

    seed = BASIS_PATH.read_bytes()

    @FUZZ
    @given(mutated(seed))
    def run(blob):
        path = work / "basis.npz"
        path.write_bytes(blob)
        _load_basis.cache_clear()
        try:
            load_basis(path)
        except AnalyzerError:
            return

    run()
    _load_basis.cache_clear()


def test_skey_weights_loader_accepts_or_refuses(work):
    from analyzer.stages import skey

    seed = skey.WEIGHTS_PATH.read_bytes()

    @FUZZ
    @given(mutated(seed))
    def run(blob):
        path = work / "skey.safetensors"
        path.write_bytes(blob)
        skey._load.cache_clear()
        try:
            net = skey.load(path)
        except AnalyzerError:
            return
        # a file that loads runs: a mutated weight may change the answer, never crash it
        p = net.probabilities(np.sin(np.arange(4 * 22050) * 0.05).astype(np.float32))
        assert p.shape == (24,)

    run()
    skey._load.cache_clear()
