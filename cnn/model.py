"""The audio CNN (Dieleman & Schrauwen's design for content-based recommendation): a log-mel front end
in PyTorch, convolutions over time, global mean / max / L2 pooling, dense layers, an L2-normalized
embedding and a head that predicts collaborative-filtering factors.

Weights live in one safetensors file whose metadata carries the manifest (architecture, sample
rate, training summary, metrics); nothing is pickled, nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
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


# What a manifest's config may hold.  Each bound keeps the model something this code can run on a
# song: the front end's STFT of a whole track (frames x bins) stays a few hundred MB, the network
# reduces any embedding window to at least one frame, and no layer asks for an absurd allocation
# (10^6 channels asked for 16 TB before anything checked).  Ours: CNNConfig's defaults.
_INT_RANGES = {
    "n_fft": (64, 8192),
    "n_mels": (1, 512),
    "kernel": (1, 64),
    "hidden": (1, 8192),
    "embedding_dim": (1, 4096),
    "n_factors": (1, 4096),
}
_MAX_LAYERS = 8
_MAX_CHANNELS = 4096
_MAX_POOL = 16
# at most this many frames per hop-length of overlap: n_fft / hop <= 4 (ours: 2)
_MAX_OVERLAP = 4


def check_config(cfg: object) -> CNNConfig:
    """The CNNConfig a manifest's "config" describes, if it is one this code can build and run.

    Parameters
    ----------
    cfg : object
        The manifest's "config" value (parsed JSON).

    Returns
    -------
    CNNConfig
        With lists turned into tuples.

    Raises
    ------
    ValueError
        Not an object, an unknown or missing field, a value of the wrong type, out of range or past
        a sane upper bound; the message names the field and the allowed range.
    """
    if not isinstance(cfg, dict):
        raise ValueError("config is not an object")
    names = {f.name for f in fields(CNNConfig)}
    unknown, missing = sorted(set(cfg) - names), sorted(names - set(cfg))
    if unknown or missing:
        raise ValueError(f"config fields {'unknown: ' + ', '.join(unknown) if unknown else ''}"
                         f"{'; ' if unknown and missing else ''}{'missing: ' + ', '.join(missing) if missing else ''}")

    def integer(name: str, v: object, lo: int, hi: int) -> int:
        if not (isinstance(v, int) and not isinstance(v, bool)) or not lo <= v <= hi:
            raise ValueError(f"config {name} is {v!r}, expected an integer in {lo}..{hi}")
        return v

    def real(name: str, v: object, lo: float, hi: float) -> float:
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)) or not lo <= v <= hi:  # NaN fails too
            raise ValueError(f"config {name} is {v!r}, expected a number in {lo:g}..{hi:g}")
        return float(v)

    def integers(name: str, v: object, lo_len: int, hi_len: int, hi: int) -> tuple[int, ...]:
        if not isinstance(v, list) or not lo_len <= len(v) <= hi_len:
            raise ValueError(f"config {name} is {v!r}, expected a list of {lo_len}..{hi_len} integers")
        return tuple(integer(f"{name}[{i}]", x, 1, hi) for i, x in enumerate(v))

    out = {name: integer(name, cfg[name], lo, hi) for name, (lo, hi) in _INT_RANGES.items()}
    # the analyzer decodes every file at this rate: a model built for another would see wrong spectra
    sr = CNNConfig.sr
    if cfg["sr"] != sr or isinstance(cfg["sr"], bool):
        raise ValueError(f"config sr is {cfg['sr']!r}; the analyzer's audio is {sr} Hz")
    out["sr"] = sr
    out["hop"] = integer("hop", cfg["hop"], -(-out["n_fft"] // _MAX_OVERLAP), out["n_fft"])
    out["fmin"] = real("fmin", cfg["fmin"], 0.0, sr / 2)
    out["fmax"] = real("fmax", cfg["fmax"], out["fmin"], sr / 2)
    if out["fmax"] <= out["fmin"]:
        raise ValueError(f"config fmax {out['fmax']:g} is not above fmin {out['fmin']:g}")
    out["channels"] = integers("channels", cfg["channels"], 1, _MAX_LAYERS, _MAX_CHANNELS)
    out["pools"] = integers("pools", cfg["pools"], 0, len(out["channels"]), _MAX_POOL)
    out["dropout"] = real("dropout", cfg["dropout"], 0.0, 0.99)
    if not isinstance(cfg["input_norm"], bool):
        raise ValueError(f"config input_norm is {cfg['input_norm']!r}, expected true or false")
    out["input_norm"] = cfg["input_norm"]
    result = CNNConfig(**out)
    # the shortest window embed() or training gives the network: one second of frames
    if _frames_out(result, int(sr / result.hop)) < 1:
        raise ValueError(f"config pools {list(result.pools)} reduce a one-second window to nothing")
    return result


def _frames_out(cfg: CNNConfig, frames: int) -> int:
    """Frames left after the convolutions (padding kernel // 2) and max-pooling of `frames`."""
    for i in range(len(cfg.channels)):
        frames = frames + 2 * (cfg.kernel // 2) - cfg.kernel + 1
        if i < len(cfg.pools):
            frames //= cfg.pools[i]
    return frames


def _check_shapes(cfg: CNNConfig, tensors: dict[str, torch.Tensor]) -> None:
    """The file's tensors against the architecture's, built on the meta device (no memory): a config
    whose network is larger than the weights the file holds is refused before anything is allocated."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AudioCNN(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected.keys() != got.keys():
        missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        raise ValueError(f"missing weights {missing[:3]}, unexpected {unexpected[:3]}")
    for k, shape in expected.items():
        if got[k] != shape:
            raise ValueError(f"{k} is {list(got[k])}, the architecture needs {list(shape)}")


def read_safetensors(path: str | Path, *, device: str = "cpu") -> tuple[dict, dict]:
    """A safetensors file's metadata and every tensor in it, for the readers of this package's files
    (models, musicnn heads, training checkpoints); safetensors' and the system's errors pass through
    for each reader to say what the file should have been."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=device) as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}


def load(path: str | Path, *, device: str = "cpu") -> tuple[AudioCNN, dict]:
    """The model and its manifest; InputError for anything that is not one of our safetensors files,
    and for a manifest whose config is out of range or does not fit the weights (checked before the
    network is built)."""
    from safetensors import SafetensorError

    try:
        meta, tensors = read_safetensors(path, device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a safetensors model file ({exc})") from None
    try:
        manifest = json.loads(meta["manifest"])
        if not isinstance(manifest, dict):
            raise ValueError("the manifest is not an object")
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        cfg = check_config(manifest["config"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: not an audio CNN of this analyzer ({exc})") from None
    try:
        _check_shapes(cfg, tensors)
    except ValueError as exc:
        raise InputError(f"{path}: its weights do not fit its architecture ({exc})") from None
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
