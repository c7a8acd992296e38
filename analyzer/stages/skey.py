"""S-KEY: Deezer's self-supervised key network (Kong et al., ICASSP 2025), run in numpy.

The network is ChromaNet (STONE, ISMIR 2024) on a constant-Q transform: 99
semitone bins from A0 (27.5 Hz) at 22050 Hz with a 512-sample hop, computed
octave by octave (the top octave's 12 complex kernels of 128 taps, the signal
halved by a 256-tap low-pass filter for each octave below), in dB over an 80 dB
range scaled to [0, 1]; its lowest 84 bins go through seven blocks of
(layer norm over the whole input, 1x2 strided convolution, GELU) then a
ConvNeXt block (depthwise k x k convolution with edge padding, layer norm,
pointwise 4x expansion, GELU, projection, layer scale, residual); the channels
are averaged over octaves and time into 12 pitch classes, a 1x1 convolution
gives major and minor logits per pitch class, batch-normalised with the
training statistics, and a softmax over the 24 gives key probabilities.

Weights and the transform's kernels are the authors' (MIT,
``analyzer/data/skey.LICENSE``), converted once from their checkpoint by
``python -m fixtures.convert_skey`` to ``analyzer/data/skey.safetensors``;
this module is our own implementation of the forward pass.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyzer.stages.weights import check_shapes, frozen, read_weights
from analyzer.errors import ParameterError

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "data" / "skey.safetensors"
FORMAT = "skey-numpy-1"
N_BLOCKS = 7
_LN_EPS = 1e-5
_BN_EPS = 1e-5
_AMIN = 1e-10

# metadata the file must carry, and its meaning: the front end the network was trained on
FRONT_END_KEYS = ("sample_rate", "hop_length", "fmin_hz", "n_bins", "bins_per_octave", "crop_bins", "top_db")


@dataclass(frozen=True)
class FrontEnd:
    sample_rate: int
    hop_length: int
    fmin_hz: float
    n_bins: int
    bins_per_octave: int
    crop_bins: int
    top_db: float

    @property
    def n_octaves(self) -> int:
        return int(math.ceil(self.n_bins / self.bins_per_octave))


@dataclass(frozen=True)
class SKey:
    """The loaded network: front end, transform kernels and ChromaNet weights (float32, read-only)."""

    front: FrontEnd
    lowpass: np.ndarray  # (256,) the half-band filter applied before each lower octave
    lengths: np.ndarray  # (n_bins,) each bin's kernel length: the CQT's librosa-style scale
    kernels: tuple[np.ndarray, ...]  # per octave, top first: (2 * bins_per_octave, taps) real rows then imaginary
    weights: dict

    @property
    def min_samples(self) -> int:
        """Shortest input: the lowest octave must outlast its kernel's half-width, and the network's seven
        halvings of the frame rate must leave a frame (128 frames: 2.95 s at 22050 Hz)."""
        taps = self.kernels[-1].shape[1]
        transform = (taps // 2 + 1) * 2 ** (self.front.n_octaves - 1)
        network = (2**N_BLOCKS - 1) * self.front.hop_length
        return max(transform, network)

    # ------------------------------------------------------------------ front end

    def log_cqt(self, samples: np.ndarray) -> np.ndarray:
        """(n_bins, frames) log-magnitude CQT in [0, 1] (top_db below the peak maps to 0)."""
        y = np.asarray(samples, dtype=np.float32).reshape(-1)
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if y.size < self.min_samples or not peak > 0:
            raise ParameterError(
                f"S-KEY needs at least {self.min_samples / self.front.sample_rate:.2f} s of non-silent audio"
            )
        y = y / peak  # the authors normalise each file to its peak before the transform
        fe = self.front
        n_frames = len(y) // fe.hop_length + 1
        octaves = []
        x = y.astype(np.float64)
        for i, kern in enumerate(self.kernels):
            if i > 0:
                x = _halve(x, self.lowpass)
            hop = fe.hop_length >> i
            taps = kern.shape[1]
            pad = taps // 2
            # reflect padding as the authors' transform does (zeros where the octave is too short to reflect)
            xp = np.pad(x, pad, mode="reflect" if len(x) > pad else "constant")
            frames = np.lib.stride_tricks.sliding_window_view(xp, taps)[::hop][:n_frames]
            z = frames @ kern.T.astype(np.float64)  # (frames, 2 * bins)
            nb = kern.shape[0] // 2
            octaves.insert(0, np.hypot(z[:, :nb], z[:, nb:]).T)
        mag = np.concatenate(octaves, axis=0)[-fe.n_bins:] * np.sqrt(self.lengths.astype(np.float64))[:, None]
        db = 10.0 * np.log10(np.maximum(mag, _AMIN))
        db = np.maximum(db, db.max() - fe.top_db)
        return (db / fe.top_db + 1.0).astype(np.float32)

    # ------------------------------------------------------------------ network

    def logits(self, log_cqt: np.ndarray) -> np.ndarray:
        """(2, 12) batch-normalised major/minor logits per pitch class of the network's own order."""
        w = self.weights
        x = log_cqt[None, : self.front.crop_bins, :].astype(np.float32)  # (channels, bins, frames)
        for i in range(N_BLOCKS):
            x = _downsample(x, w[f"time_downsampling_blocks.{i}.conv.weight"],
                            w[f"time_downsampling_blocks.{i}.conv.bias"])
            x = _convnext(x, w, f"convnext_blocks.{i}.")
        c, h, t = x.shape
        bpo = self.front.bins_per_octave
        # octaves averaged into pitch classes (bin = octave * 12 + class), then time
        chroma = x.reshape(c, h // bpo, bpo, t).mean(axis=(1, 3), dtype=np.float64)  # (channels, 12)
        z = np.einsum("oc,ck->ok", w["classifier.weight"][:, :, 0, 0].astype(np.float64), chroma)
        z += w["classifier.bias"][:, None]
        return (z - w["batch_norm.running_mean"][:, None]) / np.sqrt(w["batch_norm.running_var"][:, None] + _BN_EPS)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """(24,) key probabilities, index pitch class (C = 0) + 12 * minor."""
        z = self.logits(self.log_cqt(samples)).reshape(-1)
        p = np.exp(z - z.max())
        p /= p.sum()
        return to_pitch_class_order(p)


def to_pitch_class_order(p: np.ndarray) -> np.ndarray:
    """The network's order (majors from A, minors from B) to ours (C first, majors then minors)."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.shape != (24,):
        raise ParameterError(f"S-KEY output must have 24 values, got {p.shape}")
    i = np.arange(24)
    # the authors' key map: output k < 12 is the major key on A + k semitones, output 12 + j the
    # minor key on B + j (their classifier's second channel is read from B)
    pitch_class = np.where(i < 12, (9 + i) % 12, (11 + i - 12) % 12)
    out = np.zeros(24)
    out[pitch_class + 12 * (i >= 12)] = p
    return out


# ---------------------------------------------------------------------- layers


def _halve(x: np.ndarray, lowpass: np.ndarray) -> np.ndarray:
    """Low-pass and keep every second sample: correlation with zero padding of (taps - 1) // 2 each side, stride 2."""
    from scipy.signal import oaconvolve

    pad = (len(lowpass) - 1) // 2
    xz = np.pad(x, pad)
    full = oaconvolve(xz, lowpass[::-1].astype(np.float64), mode="valid")
    return full[::2]


def _layer_norm(x: np.ndarray) -> np.ndarray:
    """Normalise over the whole (channels, bins, frames) tensor, no affine part (the authors' layer norm)."""
    mean = float(x.mean(dtype=np.float64))
    var = float(np.square(x - mean, dtype=np.float64).mean())
    return ((x - mean) / np.sqrt(var + _LN_EPS)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh form: within 1e-3 of the erf form everywhere, and 30x faster in numpy (SIMD tanh
    against scipy's scalar erf); the logits move by ~2e-3, the probabilities by < 2e-4 (tests/test_skey.py)."""
    c = np.float32(math.sqrt(2.0 / math.pi))
    inner = x * x
    inner *= np.float32(0.044715)
    inner += np.float32(1.0)
    inner *= x
    inner *= c
    np.tanh(inner, out=inner)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(0.5)
    return inner


def _downsample(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Layer norm, then a (1, 2) convolution with stride 2 over frames, then GELU."""
    x = _layer_norm(x)
    c, h, t = x.shape[0], x.shape[1], x.shape[2] // 2
    # pairs of frames side by side: (channels, bins, frames, 2) -> one matrix product over (channel, tap)
    pairs = x[:, :, : 2 * t].reshape(c, h, t, 2).transpose(0, 3, 1, 2).reshape(2 * c, h * t)
    w = weight[:, :, 0, :].reshape(weight.shape[0], 2 * c)  # (out, channel * 2 + tap)
    y = (w @ pairs).reshape(-1, h, t)
    y += bias[:, None, None]
    return _gelu(y)


def _convnext(x: np.ndarray, w: dict, prefix: str) -> np.ndarray:
    """Depthwise k x k convolution (edge padding), layer norm, 4x pointwise MLP with GELU, layer scale, residual."""
    dw = w[prefix + "dwconv.weight"][:, 0]  # (channels, k, k)
    k = dw.shape[-1]
    c, h, t = x.shape
    xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="edge")
    y = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            y += dw[:, i, j, None, None] * xp[:, i : i + h, j : j + t]
    y += w[prefix + "dwconv.bias"][:, None, None]
    y = _layer_norm(y)
    # the pointwise layers a slice of frames at a time: the 4x expansion of a long input is large
    out = np.empty_like(x)
    w1, b1 = w[prefix + "pwconv1.weight"], w[prefix + "pwconv1.bias"]
    w2, b2 = w[prefix + "pwconv2.weight"], w[prefix + "pwconv2.bias"]
    gamma = w[prefix + "gamma"]
    step = max(1, (1 << 22) // max(1, 4 * c * h))
    for a in range(0, t, step):
        part = y[:, :, a : a + step]
        n = part.shape[2]
        z = w1 @ part.reshape(c, h * n)
        z += b1[:, None]
        z = w2 @ _gelu(z)
        z += b2[:, None]
        z *= gamma[:, None]
        out[:, :, a : a + step] = x[:, :, a : a + step] + z.reshape(c, h, n)
    return out


# ---------------------------------------------------------------------- loading


def expected_shapes(front: FrontEnd, channels: tuple[int, ...], kernel_sizes: tuple[int, ...], taps: int,
                    lowpass_taps: int) -> dict[str, tuple[int, ...]]:
    """Every tensor the file must hold and its shape."""
    bpo = front.bins_per_octave
    shapes: dict[str, tuple[int, ...]] = {"cqt.lowpass": (lowpass_taps,), "cqt.lengths": (front.n_bins,)}
    for i in range(front.n_octaves):
        shapes[f"cqt.kernel_real_{i}"] = (bpo, taps)
        shapes[f"cqt.kernel_imag_{i}"] = (bpo, taps)
    c_in = 1
    for i, (c, k) in enumerate(zip(channels, kernel_sizes)):
        p = f"chromanet.time_downsampling_blocks.{i}.conv."
        shapes[p + "weight"], shapes[p + "bias"] = (c, c_in, 1, 2), (c,)
        p = f"chromanet.convnext_blocks.{i}."
        shapes.update({
            p + "gamma": (c,), p + "dwconv.weight": (c, 1, k, k), p + "dwconv.bias": (c,),
            p + "pwconv1.weight": (4 * c, c), p + "pwconv1.bias": (4 * c,),
            p + "pwconv2.weight": (c, 4 * c), p + "pwconv2.bias": (c,),
        })
        c_in = c
    shapes.update({
        "chromanet.classifier.weight": (2, c_in, 1, 1), "chromanet.classifier.bias": (2,),
        "chromanet.batch_norm.running_mean": (2,), "chromanet.batch_norm.running_var": (2,),
    })
    return shapes


def load(path: str | Path | None = None) -> SKey:
    """The S-KEY network from its safetensors file (cached per path); ParameterError if the file is unusable."""
    return _load(str(path or WEIGHTS_PATH))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> SKey:
    meta, tensors = read_weights(path, name="S-KEY", article="an", fmt=FORMAT)
    try:
        front = FrontEnd(
            sample_rate=int(meta["sample_rate"]), hop_length=int(meta["hop_length"]), fmin_hz=float(meta["fmin_hz"]),
            n_bins=int(meta["n_bins"]), bins_per_octave=int(meta["bins_per_octave"]),
            crop_bins=int(meta["crop_bins"]), top_db=float(meta["top_db"]),
        )
        channels = tuple(int(v) for v in meta["channels"].split(","))
        kernel_sizes = tuple(int(v) for v in meta["kernel_sizes"].split(","))
    except (KeyError, ValueError) as exc:
        raise ParameterError(f"{path}: S-KEY metadata incomplete or malformed ({exc})") from None
    if (len(channels) != N_BLOCKS or len(kernel_sizes) != N_BLOCKS or front.hop_length >> (front.n_octaves - 1) < 1
            or front.crop_bins % front.bins_per_octave or not 0 < front.crop_bins <= front.n_bins):
        raise ParameterError(f"{path}: S-KEY metadata describes a network this code does not run")
    taps = tensors.get("cqt.kernel_real_0", np.zeros((0, 0))).shape[-1]
    lowpass_taps = tensors.get("cqt.lowpass", np.zeros(0)).shape[-1]
    want = expected_shapes(front, channels, kernel_sizes, taps, lowpass_taps)
    check_shapes(tensors, want, path=path, name="S-KEY")
    if np.any(tensors["chromanet.batch_norm.running_var"] < 0) or np.any(tensors["cqt.lengths"] <= 0):
        raise ParameterError(f"{path}: S-KEY normalisation statistics are out of range")
    kernels = tuple(
        frozen(np.concatenate([tensors[f"cqt.kernel_real_{i}"], tensors[f"cqt.kernel_imag_{i}"]]))
        for i in range(front.n_octaves)
    )
    weights = {k[len("chromanet."):]: frozen(v) for k, v in tensors.items() if k.startswith("chromanet.")}
    return SKey(front=front, lowpass=frozen(tensors["cqt.lowpass"]), lengths=frozen(tensors["cqt.lengths"]),
                kernels=kernels, weights=weights)
