"""The audio CNN: its mel front end, training on synthesized tracks, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analyzer.errors import InputError  # noqa: E402
from cnn.model import AudioCNN, CNNConfig, load, save  # noqa: E402
from cnn.train import TrainParams, embed, train  # noqa: E402

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
    model, hist = train(audio, factors, TINY, TrainParams(crop_s=1.0, batch=8, epochs=12, lr=3e-3, patience=12,
                                                          steps_per_epoch=4, seed=0))
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
