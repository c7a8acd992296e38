"""musicnn: the vendored taggers, our numpy forward pass against the authors' graph, the loader's refusals."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from analyzer.stages import musicnn
from _safetensors import rewrite
from analyzer.errors import ParameterError
from conftest import ROOT

AUDIO = ROOT.parent / "shared" / "models" / "musicnn" / "audio"
JORAM = AUDIO / "joram-moments_of_clarity-08-solipsism-59-88.mp3"
TRWJAZW = AUDIO / "TRWJAZW128F42760DD_test.mp3"
needs_clips = pytest.mark.skipif(not JORAM.exists() or not TRWJAZW.exists(),
                                 reason="musicnn's example clips are in ../shared/models/musicnn/audio (not here)")

VENDORED_SHA256 = {
    "mtt": "a53d8eeec25da5f822599270d224481b4d9dc519847b69576fc7297eb41b5063",
    "msd": "e8518fda7f90f11dc6c64c41c79227681c24998b39c131f0fcfdeb6bb0aa456d",
}

# The authors' graph (musicnn 0.1.0's models.py with its checkpoints, run under TensorFlow 2.21's compat.v1 with
# tf_keras in a scratch environment that is not part of this project) fed the same log-mel spectrogram as ours
# (log_mel of the clip decoded at 16 kHz by analyzer.stages.audio.decode): the mean over patches of its five most
# probable tags.  Over all 50 tags and every patch our port is within 4e-6 of it, and the penultimate features
# within 1.2e-5.
REFERENCE_TOP5 = {
    ("mtt", "joram"): [("techno", 0.585462), ("electronic", 0.540795), ("synth", 0.418692), ("fast", 0.272274),
                       ("beat", 0.212939)],
    ("mtt", "trwjazw"): [("guitar", 0.513004), ("piano", 0.260286), ("fast", 0.184162), ("country", 0.128654),
                         ("classical", 0.124442)],
    ("msd", "joram"): [("electronic", 0.293866), ("instrumental", 0.146401), ("ambient", 0.124576),
                       ("chillout", 0.123248), ("rock", 0.111205)],
    ("msd", "trwjazw"): [("blues", 0.347816), ("rock", 0.159415), ("folk", 0.138099), ("instrumental", 0.093134),
                         ("guitar", 0.085166)],
}


@pytest.fixture(scope="module")
def clips():
    from analyzer.stages.audio import decode

    return {name: decode(path, sr=16000).samples for name, path in (("joram", JORAM), ("trwjazw", TRWJAZW))}


def _wheel() -> Path:
    path = os.environ.get("MUSICNN_WHEEL")
    if not path or not Path(path).is_file():
        pytest.skip("musicnn's wheel is not here: set MUSICNN_WHEEL to `pip download --no-deps musicnn==0.1.0`'s file")
    return Path(path)


# ---------------------------------------------------------------- the published examples


@needs_clips
def test_the_published_mtt_top_ten_on_the_joram_clip(clips):
    """musicnn's README: top_tags(joram clip, model='MTT_musicnn', topN=10)."""
    out = musicnn.predict(musicnn.load_tagger("mtt"), clips["joram"], 16000)
    assert [t for t, _ in out.top(10)] == ["techno", "electronic", "synth", "fast", "beat", "drums", "no vocals",
                                          "no vocal", "dance", "ambient"]


@needs_clips
def test_the_published_top_three_on_the_msd_clip(clips):
    """musicnn's README: top_tags('TRWJAZW128F42760DD_test.mp3') -> guitar, piano, fast.  That call uses
    top_tags's default model, MTT_musicnn (piano and fast are not MSD tags): the README publishes nothing for
    MSD_musicnn, which is checked against the authors' graph below instead."""
    out = musicnn.predict(musicnn.load_tagger("mtt"), clips["trwjazw"], 16000)
    assert [t for t, _ in out.top(3)] == ["guitar", "piano", "fast"]


@needs_clips
@pytest.mark.parametrize(("name", "clip"), sorted(REFERENCE_TOP5))
def test_forward_pass_matches_the_authors_graph(clips, name, clip):
    tagger = musicnn.load_tagger(name)
    out = musicnn.predict_spectrogram(tagger, musicnn.log_mel(clips[clip], 16000))
    got = out.top(5)
    assert [t for t, _ in got] == [t for t, _ in REFERENCE_TOP5[(name, clip)]]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in REFERENCE_TOP5[(name, clip)]], atol=1e-4)


@needs_clips
def test_other_sample_rates_are_resampled(clips):
    """The joram clip at 22050 Hz (soxr there and back): the same top five."""
    import soxr

    x = soxr.resample(clips["joram"], 16000, 22050, quality="HQ")
    out = musicnn.predict(musicnn.load_tagger("mtt"), x, 22050)
    assert [t for t, _ in out.top(5)] == [t for t, _ in REFERENCE_TOP5[("mtt", "joram")]]


# ---------------------------------------------------------------- shapes, ranges, short input


@pytest.mark.parametrize("name", ["mtt", "msd"])
def test_outputs_have_their_shapes_and_ranges(name):
    tagger = musicnn.load_tagger(name)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000 * 10)).astype(np.float32)
    out = musicnn.predict(tagger, x, 16000)
    n_frames = 1 + len(x) // 256
    assert out.patch_probabilities.shape == (n_frames // 187, 50) == (3, 50)
    assert out.patch_embeddings.shape == (3, 200) and tagger.embedding_size == 200
    assert out.probabilities.shape == (50,) and out.embedding.shape == (200,)
    assert np.all((out.patch_probabilities >= 0) & (out.patch_probabilities <= 1))
    assert np.isfinite(out.patch_embeddings).all()
    assert len(tagger.tags) == 50 == len(set(tagger.tags))
    assert out.patch_s == pytest.approx(187 * 256 / 16000)


def test_short_input_is_refused_in_one_line():
    """One whole patch is the least the original tags (it fails below that); we refuse with our error."""
    tagger = musicnn.load_tagger("mtt")
    n = tagger.front.min_samples
    assert n == 47616
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.1
    assert musicnn.predict(tagger, x, 16000).patch_probabilities.shape == (1, 50)
    for short in (x[: n - 1], x[:100], x[:0]):
        with pytest.raises(ParameterError, match="at least 2.98 s") as err:
            musicnn.predict(tagger, short, 16000)
        assert "\n" not in str(err.value)


def test_silence_gives_finite_probabilities():
    out = musicnn.predict(musicnn.load_tagger("msd"), np.zeros(16000 * 4, np.float32), 16000)
    assert np.isfinite(out.patch_probabilities).all()


def test_mel_filters_are_librosas():
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)  # htk=False, norm='slaney' (0.7's norm=1)
    np.testing.assert_allclose(musicnn.mel_basis(), want, atol=1e-7)


def test_the_front_end_is_librosas_with_reflect_padding():
    """The original's spectrogram: librosa's melspectrogram (reflect padding, as in 0.7), float16, log."""
    librosa = pytest.importorskip("librosa")
    x = (0.3 * np.random.default_rng(2).standard_normal(16000 * 4)).astype(np.float32)
    m = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect").T
    want = np.log10(10000 * m.astype(np.float16).astype(np.float32) + 1)
    got = musicnn.log_mel(x, 16000)
    assert got.shape == want.shape
    # float16 rounding can fall either side for values on a rounding boundary: one float16 step at most
    assert np.abs(got - want).max() < 0.05 and np.mean(np.abs(got - want) > 1e-4) < 1e-3


# ---------------------------------------------------------------- the vendored files


@pytest.mark.parametrize("name", ["mtt", "msd"])
def test_vendored_files_are_the_recorded_ones(name):
    path = musicnn.WEIGHTS_PATHS[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VENDORED_SHA256[name]
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == musicnn.FORMAT and "ISC" in meta["licence"] and "musicnn" in meta["source"]
    notice = (ROOT / "analyzer" / "data" / "musicnn.LICENSE").read_text(encoding="utf-8")
    assert "Universitat Pompeu Fabra" in notice and "musicnn_mtt.safetensors" in notice


def test_conversion_regenerates_the_vendored_files_and_round_trips(tmp_path):
    wheel = _wheel()
    from safetensors.numpy import load_file

    from fixtures.convert_musicnn import MODELS, read_bundle, convert

    written = convert(wheel, tmp_path)
    assert [p.name for p in written] == ["musicnn_mtt.safetensors", "musicnn_msd.safetensors"]
    for name, path in zip(MODELS, written):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == VENDORED_SHA256[name]
    # every inference tensor, bit for bit, from the checkpoint
    with zipfile.ZipFile(wheel) as z:
        bundle = read_bundle(z.read("musicnn/MSD_musicnn/.index"), z.read("musicnn/MSD_musicnn/.data-00000-of-00001"))
    ours = load_file(str(written[1]))
    np.testing.assert_array_equal(ours["conv.timbral_74.kernel"], bundle["conv2d/kernel"])
    np.testing.assert_array_equal(ours["bn.penultimate.var"], bundle["batch_normalization_10/moving_variance"])
    np.testing.assert_array_equal(ours["dense.logits.kernel"], bundle["dense_1/kernel"])
    assert len(ours) == 8 * 2 + 11 * 4 + 2 * 2


def test_conversion_without_the_wheel_says_how_to_get_it(tmp_path, monkeypatch):
    from fixtures.convert_musicnn import wheel_path

    monkeypatch.delenv("MUSICNN_WHEEL", raising=False)
    for arg in (None, str(tmp_path / "nope.whl")):
        with pytest.raises(SystemExit, match=r"pip download --no-deps musicnn==0\.1\.0") as err:
            wheel_path(arg)
        assert "\n" not in str(err.value)


def test_conversion_refuses_another_wheel(tmp_path):
    from fixtures.convert_musicnn import convert

    fake = tmp_path / "musicnn-0.1.0-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(SystemExit, match="SHA-256"):
        convert(fake, tmp_path / "out")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("format", {"meta": {"format": "something-else"}}, "not a musicnn weights file"),
    ("other model", {"meta": {"model": "MSD_musicnn"}}, "expected MTT_musicnn"),
    ("missing tensor", {"drop": "dense.logits.bias"}, "is missing"),
    ("wrong shape", {"change": {"conv.midend_2.kernel": lambda a: a[:5]}}, "has shape"),
    ("nan", {"change": {"bn.pool_bn.gamma": lambda a: a * np.nan}}, "non-finite"),
    ("bad metadata", {"meta": {"n_mels": "ninety-six"}}, "metadata"),
    ("fewer tags", {"meta": {"tags": "rock\npop"}}, "has shape"),
    ("negative variance", {"change": {"bn.penultimate.var": lambda a: -a}}, "negative"),
])
def test_loader_refuses_unusable_files_in_one_line(tmp_path, kind, kwargs, message):
    path = rewrite(musicnn.WEIGHTS_PATHS["mtt"], tmp_path / "w.safetensors", **kwargs)
    with pytest.raises(ParameterError, match=message) as err:
        musicnn.load_tagger("mtt", path)
    assert "\n" not in str(err.value)


def test_loader_refuses_the_other_taggers_file_and_unknown_names():
    with pytest.raises(ParameterError, match="expected MSD_musicnn"):
        musicnn.load_tagger("msd", musicnn.WEIGHTS_PATHS["mtt"])
    with pytest.raises(ParameterError, match="must be one of mtt, msd"):
        musicnn.load_tagger("vgg")


def test_loader_refuses_damaged_bytes(tmp_path):
    raw = musicnn.WEIGHTS_PATHS["msd"].read_bytes()
    for name, blob in {"truncated": raw[: len(raw) // 2], "garbage": b"\x00" * 64,
                       "header": raw[:8] + b"X" + raw[9:]}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ParameterError, match="cannot read the musicnn weights"):
            musicnn.load_tagger("msd", path)


def test_loaded_weights_are_read_only():
    tagger = musicnn.load_tagger("mtt")
    with pytest.raises(ValueError):
        tagger.weights["dense.logits.bias"][0] = 0.0
