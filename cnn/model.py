"""The audio CNN (Dieleman & Schrauwen's design for content-based recommendation): a log-mel front end
in PyTorch, convolutions over time, global mean / max / L2 pooling, dense layers, an L2-normalized
embedding and a head that predicts collaborative-filtering factors.

Weights live in one safetensors file whose metadata carries the manifest (architecture, sample
rate, training summary, metrics); nothing is pickled, nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analyzer.errors import InputError

FORMAT = "echonest-analyzer-cnn/1"


@dataclass(frozen=True)
class CNNConfig:
    sr: int = 22050  # the analyzer's decoded audio: no second decode
    n_fft: int = 1024
    hop: int = 512  # 23 ms frames
    n_mels: int = 96
    fmin: float = 20.0
    fmax: float = 11025.0
    channels: tuple[int, ...] = (256, 256, 512)
    kernel: int = 4
    pools: tuple[int, ...] = (4, 2)  # max-pooling over time after the first convolutions
    hidden: int = 512
    embedding_dim: int = 128
    n_factors: int = 64
    dropout: float = 0.3
    # standardize each mel band (BatchNorm without scale and shift) before the first convolution:
    # the log-mel levels of quiet and loud tracks, and of low and high bands, differ by a lot
    input_norm: bool = True


class MelFrontEnd(nn.Module):
    """log(1 + 10000 * mel power): STFT and the Slaney mel filterbank (librosa's, built once as a buffer)."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        import librosa

        self.cfg = cfg
        mel = librosa.filters.mel(sr=cfg.sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        self.register_buffer("mel", torch.from_numpy(mel.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) float -> (batch, n_mels, frames)."""
        spec = torch.stft(audio, self.cfg.n_fft, self.cfg.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real**2 + spec.imag**2
        return torch.log1p(10000.0 * (self.mel @ power))


class Head(nn.Module):
    """Dense layer, L2-normalized embedding, factor prediction: shared by the CNN and the
    statistics baseline so that they differ only in what they see."""

    def __init__(self, n_in: int, cfg: CNNConfig):
        super().__init__()
        self.dense = nn.Sequential(nn.Linear(n_in, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.embed = nn.Linear(cfg.hidden, cfg.embedding_dim)
        self.factors = nn.Linear(cfg.embedding_dim, cfg.n_factors)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = nn.functional.normalize(self.embed(self.dense(x)), dim=1)
        return e, self.factors(e)


class AudioCNN(nn.Module):
    def __init__(self, cfg: CNNConfig = CNNConfig()):
        super().__init__()
        self.cfg = cfg
        self.front = MelFrontEnd(cfg)
        layers: list[nn.Module] = [nn.BatchNorm1d(cfg.n_mels, affine=False)] if cfg.input_norm else []
        c_in = cfg.n_mels
        for i, c in enumerate(cfg.channels):
            layers += [nn.Conv1d(c_in, c, cfg.kernel, padding=cfg.kernel // 2), nn.BatchNorm1d(c), nn.ReLU()]
            if i < len(cfg.pools):
                layers.append(nn.MaxPool1d(cfg.pools[i]))
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.head = Head(3 * c_in, cfg)

    def forward_mel(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(mel)
        # global temporal pooling: any length in, one vector out
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2), torch.sqrt((h * h).mean(dim=2) + 1e-8)], dim=1)
        return self.head(pooled)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> (L2-normalized embeddings, predicted factors)."""
        return self.forward_mel(self.front(audio))


class StatsModel(nn.Module):
    """The baseline: the same head on fixed per-track statistics (e.g. MFCC means and spreads),
    standardized with the training set's mean and spread (kept as buffers)."""

    def __init__(self, n_in: int, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mu", torch.zeros(n_in))
        self.register_buffer("sd", torch.ones(n_in))
        self.head = Head(n_in, cfg)

    def forward_mel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the training loop crops along the last axis; statistics have none to crop
        return self.head((x.mean(dim=2) - self.mu) / self.sd)


def save(model: AudioCNN, path: str | Path, *, training: dict | None = None, metrics: dict | None = None) -> None:
    from safetensors.torch import save_file

    manifest = {"format": FORMAT, "config": asdict(model.cfg), "training": training or {}, "metrics": metrics or {}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"manifest": json.dumps(manifest)})
    tmp.replace(path)


def load(path: str | Path, *, device: str = "cpu") -> tuple[AudioCNN, dict]:
    """The model and its manifest; InputError for anything that is not one of our safetensors files."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a safetensors model file ({exc})") from None
    try:
        manifest = json.loads(meta["manifest"])
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        cfg_d = manifest["config"]
        cfg = CNNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_d.items()})
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an audio CNN of this analyzer ({exc})") from None
    model = AudioCNN(cfg)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InputError(f"{path}: its weights do not fit its architecture ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model.to(device), manifest


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
