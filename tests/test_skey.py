"""S-KEY: the vendored weights, our numpy forward pass against the authors' implementation, the loader's refusals."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from analyzer.stages import features as F
from analyzer.stages import skey
from _safetensors import rewrite
from analyzer.errors import ParameterError
from analyzer.stages.key import KeyParams, estimate_key
from conftest import ROOT
from fixtures.synth import chord_progression

SHARED_SKEY = ROOT.parent / "shared" / "models" / "skey"
CHECKPOINT = SHARED_SKEY / "skey" / "models" / "skey.pt"
NOCTURNE = SHARED_SKEY / "tests" / "nocturne_n02_in_e-flat_major.mp3"

# The authors' forward pass (deezer/skey 918b83d2 with nnAudio 0.3.2, in a scratch environment that is not part
# of this project) on fixtures.synth.chord_progression: the 24 batch-normalised logits before the softmax, in the
# network's order (majors from A, minors from B).  Our port uses GELU's tanh form, which moves them by ~2e-3.
REFERENCE_LOGITS = {
    ("F", "minor", 12): [-0.5576, 0.1117, -0.5444, -0.2976, -0.1985, -0.5232, -0.2757, -0.4879, 0.1322, -0.3946,
                         -0.447, -0.3781, -0.4593, -0.0205, -0.4265, -0.2446, -0.1286, -0.3964, 5.6051, -0.3926,
                         -0.1421, -0.2653, -0.3094, 0.1233],
    ("E", "major", 8): [0.49598, -0.38806, -0.0015653, -0.29572, -0.29831, -0.1832, -0.39633, 5.7411, -0.38001,
                        -0.019293, -0.34936, -0.35589, -0.34373, -0.39693, -0.21171, -0.31705, -0.24415, -0.070926,
                        -0.42114, -0.44475, -0.39395, -0.26912, -0.20904, -0.34132],
}


class _Models:
    def __init__(self) -> None:
        self.skey = skey.load()


@pytest.fixture(scope="module")
def models():
    return _Models()


@pytest.mark.parametrize(("key", "mode", "seconds"), sorted(REFERENCE_LOGITS))
def test_forward_pass_matches_the_authors_implementation(key, mode, seconds):
    net = skey.load()
    x, _, _ = chord_progression(key=key, mode=mode, seconds=seconds)
    ours = net.logits(net.log_cqt(x)).reshape(-1)
    np.testing.assert_allclose(ours, REFERENCE_LOGITS[(key, mode, seconds)], atol=0.01)


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_every_key_of_a_cadence(models, mode):
    """All 24 keys: the network's output order (majors from A, minors from B) is mapped right."""
    for pc in range(12):
        x, sr, truth = chord_progression(key=pc, mode=mode, seconds=20)
        k = estimate_key(probabilities=F.skey_probabilities(samples=x, sr=sr, models=models), samples=x,
                         params=KeyParams())
        assert k.label == truth["key_name"]
        assert k.key_confidence > 0.5


@pytest.mark.skipif(not NOCTURNE.exists(), reason="the S-KEY test song is in ../shared/models/skey (not here)")
def test_the_nocturne_is_e_flat_major(models):
    from analyzer.stages.audio import decode

    audio = decode(NOCTURNE)
    k = estimate_key(probabilities=F.skey_probabilities(samples=audio.samples, sr=audio.sr, models=models),
                     samples=audio.samples, params=KeyParams())
    assert (k.key, k.mode) == (3, 1)  # E-flat (D#) major


def test_a_long_input_is_read_in_parts_whose_probabilities_are_averaged(models):
    """Past key_block_s the file is cut into equal parts: a piece in two keys gives both, each about half."""
    a, sr, _ = chord_progression(key="D", mode="major", seconds=40)
    b, _, _ = chord_progression(key="G#", mode="minor", seconds=40)
    x = np.concatenate([a, b])
    p = F.skey_probabilities(samples=x, sr=sr, models=models, params=F.FeatureParams(key_block_s=40.0))
    assert p.sum() == pytest.approx(1.0)
    d_major, g_sharp_minor = 2, 8 + 12
    assert set(np.argsort(p)[-2:]) == {d_major, g_sharp_minor}
    assert p[d_major] == pytest.approx(p[g_sharp_minor], abs=0.2)
    one = F.skey_probabilities(samples=a, sr=sr, models=models)
    np.testing.assert_allclose(F.skey_probabilities(samples=a, sr=sr, models=models,
                                                    params=F.FeatureParams(key_block_s=100.0)), one)


def test_other_sample_rates_are_resampled(models):
    x, sr, _ = chord_progression(key="D", mode="major", seconds=10, sr=48000)
    p = F.skey_probabilities(samples=x, sr=sr, models=models)
    assert int(np.argmax(p)) == 2


def test_too_short_or_silent_input_has_no_key(models):
    x, sr, _ = chord_progression(key="D", mode="major", seconds=2.5)
    assert F.skey_probabilities(samples=x, sr=sr, models=models) is None  # under 2.95 s
    assert F.skey_probabilities(samples=np.zeros(sr * 20, np.float32), sr=sr, models=models) is None
    assert estimate_key(probabilities=None, samples=x, params=KeyParams()).key == -1


# ---------------------------------------------------------------- the vendored file


def test_vendored_weights_carry_their_licence_and_source():
    from safetensors import safe_open

    with safe_open(str(skey.WEIGHTS_PATH), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == skey.FORMAT
    assert "MIT" in meta["licence"] and "deezer/skey" in meta["source"]
    notice = (ROOT / "analyzer" / "data" / "skey.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in notice and "Deezer SA" in notice


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="the S-KEY checkpoint is in ../shared/models/skey (not here)")
def test_conversion_regenerates_the_vendored_file_and_round_trips(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from fixtures.convert_skey import convert

    out = convert(CHECKPOINT, tmp_path / "skey.safetensors")
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(skey.WEIGHTS_PATH.read_bytes()).digest()
    # every tensor of the network, bit for bit, under its new name and shape
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=False)["stone"]
    ours = load_file(str(out))
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if name == "hcqt.lowpass_filter":
            new = "cqt.lowpass"
        elif name == "hcqt.lenghts":
            new = "cqt.lengths"
        elif name.startswith("hcqt.cqt_kernels_"):
            part, octave = name[len("hcqt.cqt_kernels_"):].split("_")
            new = f"cqt.kernel_{part}_{octave}"
        else:
            new = name
        np.testing.assert_array_equal(ours[new].reshape(value.shape), value.numpy())


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("format", {"meta": {"format": "something-else"}}, "not an S-KEY weights file"),
    ("missing tensor", {"drop": "chromanet.classifier.bias"}, "is missing"),
    ("wrong shape", {"change": {"cqt.lengths": lambda a: a[:50]}}, "has shape"),
    ("nan", {"change": {"chromanet.convnext_blocks.2.gamma": lambda a: a * np.nan}}, "non-finite"),
    ("bad metadata", {"meta": {"n_bins": "ninety"}}, "metadata"),
    ("negative variance", {"change": {"chromanet.batch_norm.running_var": lambda a: -a}}, "out of range"),
])
def test_loader_refuses_unusable_files_in_one_line(tmp_path, kind, kwargs, message):
    path = rewrite(skey.WEIGHTS_PATH, tmp_path / "w.safetensors", **kwargs)
    with pytest.raises(ParameterError, match=message) as err:
        skey.load(path)
    assert "\n" not in str(err.value)


def test_loader_refuses_damaged_bytes(tmp_path):
    raw = bytearray(skey.WEIGHTS_PATH.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    assert header  # a real safetensors file
    for name, blob in {"truncated": bytes(raw[: len(raw) // 2]), "garbage": b"\x00" * 64,
                       "header": bytes(raw[:8]) + b"X" + bytes(raw[9:])}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ParameterError, match="cannot read the S-KEY weights"):
            skey.load(path)
