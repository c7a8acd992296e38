"""The audio CNN: its mel front end, training on synthesized tracks, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analyzer.errors import InputError  # noqa: E402
from cnn.model import AudioCNN, CNNConfig, StatsModel, load, save  # noqa: E402
from cnn.train import TrainParams, embed, mels, train  # noqa: E402

SR = 22050
TINY = CNNConfig(n_mels=32, channels=(16, 16, 32), hidden=32, embedding_dim=16, n_factors=4, dropout=0.0)


def test_mel_front_end_matches_librosa():
    import librosa

    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR).astype(np.float32) * 0.1
    cfg = CNNConfig()
    ours = AudioCNN(cfg).front(torch.from_numpy(x)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=cfg.n_fft, hop_length=cfg.hop, n_mels=cfg.n_mels,
                                         fmin=cfg.fmin, fmax=cfg.fmax, power=2.0)
    np.testing.assert_allclose(ours, np.log1p(10000.0 * ref), rtol=1e-3, atol=1e-3)


def _tracks(n_per_class: int = 6, seconds: float = 4.0):
    """Three kinds of sound (low tones, high tones, noise bursts), each with its own target factors."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    audio, factors = [], []
    targets = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    for k in range(3):
        for _ in range(n_per_class):
            if k == 0:
                x = np.sin(2 * np.pi * rng.uniform(80, 200) * t)
            elif k == 1:
                x = np.sin(2 * np.pi * rng.uniform(2000, 4000) * t)
            else:
                x = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0)
            audio.append((0.3 * x).astype(np.float32))
            factors.append(targets[k] + rng.normal(0, 0.05, 4))
    return audio, np.array(factors, dtype=np.float32)


def test_a_tiny_seeded_model_learns_and_its_loss_falls():
    torch.set_num_threads(1)
    audio, factors = _tracks()
    torch.manual_seed(0)
    model = AudioCNN(TINY)
    model, hist = train(mels(model, audio), factors, model, TrainParams(crop_s=1.0, batch=8, epochs=12, lr=3e-3,
                                                                        patience=12, steps_per_epoch=4, seed=0))
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0], hist.train_loss
    # the embeddings of one kind of sound are closer to each other than to another kind's
    e = np.stack([embed(model, a, window_s=1.0) for a in audio])
    sim = e @ e.T
    same = np.mean([sim[i, j] for i in range(18) for j in range(18) if i != j and i // 6 == j // 6])
    other = np.mean([sim[i, j] for i in range(18) for j in range(18) if i // 6 != j // 6])
    assert same > other + 0.2, (same, other)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = AudioCNN(TINY).eval()
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, SR)).astype(np.float32))
    path = tmp_path / "cnn.safetensors"
    save(model, path, training={"tracks": 0}, metrics={"note": "untrained"})
    again, manifest = load(path)
    with torch.no_grad():
        a, b = model(x), again(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert manifest["config"]["n_mels"] == 32 and manifest["metrics"] == {"note": "untrained"}


def test_loading_refuses_what_is_not_our_safetensors(tmp_path):
    import pickle

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InputError, match="not a safetensors"):
        load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(InputError, match="not an audio CNN"):
        load(other)


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    """Stopped after 2 epochs and rerun with 4: bit-identical to 4 epochs in one go."""
    torch.set_num_threads(1)
    audio, factors = _tracks(n_per_class=3, seconds=2.0)
    cfg = CNNConfig(n_mels=16, channels=(8, 8, 8), hidden=8, embedding_dim=8, n_factors=4, dropout=0.2)
    p = TrainParams(crop_s=0.5, batch=4, epochs=4, patience=10, steps_per_epoch=2, seed=3)

    def run(epochs, ckpt):
        torch.manual_seed(0)
        m = AudioCNN(cfg)
        return train(mels(m, audio), factors, m, TrainParams(**{**p.__dict__, "epochs": epochs}), checkpoint=ckpt)

    whole, h1 = run(4, None)
    ckpt = tmp_path / "train.ckpt"
    run(2, ckpt)
    assert ckpt.is_file()
    resumed, h2 = run(4, ckpt)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # another run's checkpoint is refused, not silently mixed in
    other = TrainParams(**{**p.__dict__, "lr": 0.1})
    m = AudioCNN(cfg)
    with pytest.raises(InputError, match="another training run"):
        train(mels(m, audio), factors, m, other, checkpoint=ckpt)


def test_the_statistics_baseline_uses_the_same_head():
    torch.set_num_threads(1)
    audio, factors = _tracks()
    stats = [np.concatenate([np.log1p(np.abs(np.fft.rfft(a))[:2000:100]), [a.std()]])[:, None].astype(np.float32)
             for a in audio]
    model = StatsModel(stats[0].shape[0], TINY)
    s = np.stack([x[:, 0] for x in stats])
    model.mu.copy_(torch.from_numpy(s.mean(0)))
    model.sd.copy_(torch.from_numpy(s.std(0) + 1e-6))
    model, hist = train(stats, factors, model, TrainParams(batch=8, epochs=30, lr=3e-3, patience=30, steps_per_epoch=4))
    assert type(model.head) is type(AudioCNN(TINY).head)
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0], hist.train_loss


def test_cnn_train_then_analyze_with_the_model_end_to_end(tmp_path):
    """recommend fit -> cnn train on the items' audio -> analyze --model adds a schema-valid embedding
    -> recommend ingest reads it as the item's audio vector."""
    import json
    import subprocess
    import sys

    import soundfile as sf

    def cli(*args, stdin=None):
        return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, input=stdin)

    rng = np.random.default_rng(4)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    t = np.arange(int(3.0 * SR)) / SR
    for i in range(24):
        k = i % 3
        x = (np.sin(2 * np.pi * (110 if k == 0 else 3000 if k == 1 else 600) * t) if k < 2
             else rng.standard_normal(len(t)) * 0.5)
        sf.write(audio_dir / f"t{i:02d}.wav", (0.3 * x).astype(np.float32), SR)
    plays = ["user\titem\tplays"] + [f"u{u:02d}\tt{i:02d}\t{1 + (u * i) % 7}" for u in range(30) for i in range(24)
                                     if i % 3 == u % 3 and (u + i) % 4 != 0]
    (tmp_path / "plays.tsv").write_text("\n".join(plays) + "\n")
    model = tmp_path / "m"
    assert cli("recommender.cli", "import-plays", tmp_path / "plays.tsv", "--model", model).returncode == 0
    assert cli("recommender.cli", "fit", "--model", model, "--no-tune").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "not-an-item.wav", np.zeros(SR, dtype=np.float32), SR)
    few = cli("cnn.cli", "train", other, "--model", model)  # no audio named after the model's items
    assert few.returncode == 1 and few.stderr.decode().startswith("error: ") and b"Traceback" not in few.stderr
    out = cli("cnn.cli", "train", audio_dir, "--model", model, "--epochs", "2", "--batch", "8", "--crop", "1",
              "--min-listeners", "1")
    assert out.returncode == 0, out.stderr
    cnn = model / "cnn.safetensors"
    assert cnn.is_file() and not (model / "cnn.safetensors.ckpt").exists()
    _, manifest = load(cnn)
    assert manifest["training"]["tracks"] == 24 and manifest["config"]["n_factors"] > 0

    doc = cli("analyzer.cli", audio_dir / "t00.wav", "--model", cnn)
    assert doc.returncode == 0, doc.stderr
    d = json.loads(doc.stdout)
    assert len(d["embedding"]) == 128 and abs(np.linalg.norm(d["embedding"]) - 1) < 1e-3
    assert d["embedding_model"].startswith("cnn.safetensors ")
    ing = cli("recommender.cli", "ingest", "--model", model, stdin=doc.stdout)
    assert ing.returncode == 0, ing.stderr
    from recommender.store import Store

    ds = Store(model).dataset()
    assert ds.audio.shape[1] == 128 and ds.audio_present.sum() == 1

    # a batch rerun with --model redoes the documents that lack this model's embedding, then skips them
    import shutil

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(audio_dir / "t01.wav", one / "t01.wav")
    outd = tmp_path / "out"
    assert cli("analyzer.cli", one, "-o", outd).returncode == 0
    # without --model the document carries the default (musicnn) embedding, not this model's
    assert json.loads((outd / "t01.json").read_text())["embedding_model"] == "musicnn-msd-penultimate-1"
    again = cli("analyzer.cli", one, "-o", outd, "--model", cnn)
    assert again.returncode == 0 and b"1 analyzed" in again.stderr, again.stderr
    assert json.loads((outd / "t01.json").read_text())["embedding_model"] == d["embedding_model"]
    assert b"1 up to date" in cli("analyzer.cli", one, "-o", outd, "--model", cnn).stderr

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    refused = cli("analyzer.cli", audio_dir / "t00.wav", "--model", bad)
    assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1 and b"not a safetensors" in refused.stderr


def test_contrastive_term_prefers_two_crops_of_one_track():
    from cnn.train import nt_xent

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    near = torch.nn.functional.normalize(a + 0.05 * torch.randn(8, 16, generator=g), dim=1)
    far = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    assert float(nt_xent(a, near, 0.1)) < 0.1 < float(nt_xent(a, far, 0.1))


def _with_config(path, **changes):
    """TINY's weights in a valid safetensors file whose manifest's config is changed (None: removed)."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {k: v.contiguous() for k, v in AudioCNN(TINY).state_dict().items()}
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(TINY).items()}
    for k, v in changes.items():
        if v is None:
            del cfg[k]
        else:
            cfg[k] = v
    manifest = {"format": "echonest-analyzer-cnn/1", "config": cfg, "training": {}, "metrics": {}}
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})
    return path


HOSTILE_CONFIGS = {
    "negative mels": {"n_mels": -5},
    "mels a string": {"n_mels": "lots"},
    "hidden a list": {"hidden": [1, 2]},
    "a million channels": {"channels": [10**6] * 3},  # was: "tried to allocate 16 TB"
    "channels a string": {"channels": "wide"},
    "no channels": {"channels": []},
    "kernel 0": {"kernel": 0},
    "pools past the window": {"pools": [16, 16, 16]},
    "other sample rate": {"sr": 44100},
    "fmax above Nyquist": {"fmax": 30000.0},
    "fmin above fmax": {"fmin": 9000.0, "fmax": 8000.0},
    "hop past the overlap bound": {"hop": 1},
    "dropout NaN": {"dropout": float("nan")},
    "input_norm a string": {"input_norm": "yes"},
    "a bool for an int": {"embedding_dim": True},
    "unknown field": {"layers": 3},
    "missing field": {"n_mels": None},
}


@pytest.mark.parametrize("name", list(HOSTILE_CONFIGS))
def test_a_hostile_config_is_refused_before_the_network_is_built(tmp_path, name):
    """A valid safetensors file whose manifest asks for an impossible or absurd network: InputError
    naming the field, where it was a ValueError, TypeError or RuntimeError from inside torch."""
    path = _with_config(tmp_path / "m.safetensors", **HOSTILE_CONFIGS[name])
    with pytest.raises(InputError, match=r"m\.safetensors: not an audio CNN of this analyzer \(config "):
        load(path)


def test_a_config_larger_than_the_weights_it_ships_is_refused_unallocated(tmp_path, monkeypatch):
    """In range, but bigger than the file's tensors: refused by comparing shapes on the meta device,
    before a real network is built (AudioCNN is never constructed on the CPU)."""
    import cnn.model as cm

    built = []
    real_init = cm.AudioCNN.__init__

    def counting_init(self, cfg=TINY):
        built.append(torch.empty(0).device.type)  # the device a new tensor would get here
        real_init(self, cfg)

    path = _with_config(tmp_path / "m.safetensors", channels=[4096] * 8, pools=[2, 2])
    monkeypatch.setattr(cm.AudioCNN, "__init__", counting_init)
    with pytest.raises(InputError, match="do not fit its architecture"):
        load(path)
    assert built == ["meta"]


def test_the_command_lines_refuse_a_hostile_model_in_one_line(tmp_path):
    """`cnn embed` and `analyze --model` (through the `cnn` embedder entry point, which calls load)."""
    import subprocess
    import sys

    import soundfile as sf

    wav = tmp_path / "tone.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32), SR)
    model = _with_config(tmp_path / "huge.safetensors", channels=[10**6] * 3)
    for args in (["cnn.cli", "embed", wav, "--model", model], ["analyzer.cli", wav, "--model", model]):
        r = subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True)
        err = r.stderr.decode()
        assert r.returncode == 1 and b"Traceback" not in r.stderr, err
        assert err.startswith("error: ") and err.count("\n") == 1 and "config channels[0] is 1000000" in err, err
