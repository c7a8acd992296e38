"""musicnn: Pons & Serra's pretrained music taggers (MagnaTagATune and Million Song Dataset), run in numpy.

The network (Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio tagging",
ISMIR 2019 LBD) reads 3 s patches (187 frames) of a 96-band log-mel spectrogram at 16 kHz (512-point FFT,
256-sample hop, ``log10(10000 x + 1)`` of the mel power):

* front end: a batch norm of the input, then five musically motivated convolutions, each ReLU, batch norm
  and a max over frequency: two timbral ones (7 frames x 38 and x 67 mel bands, 204 filters each, the time
  axis zero-padded by 3) and three temporal ones (128, 64 and 32 frames x 1 band, 51 filters each, "same"
  padding) -> 561 features per frame;
* mid end: three 1-D convolutions over time (7 frames, 64 filters, zero padding 3), each ReLU and batch
  norm, the second and third with a residual connection; the front end's 561 features and the three
  outputs are concatenated -> 753 per frame;
* back end: max and mean over the patch's frames (interleaved, 1506), batch norm, a 200-unit dense layer
  with ReLU and batch norm (musicnn's ``penultimate`` features), a 50-unit dense layer and a sigmoid.

Batch norms run in inference mode with the training's moving statistics and TensorFlow's epsilon (0.001,
the default of ``tf.layers.batch_normalization``, which the authors kept).  Weights are the authors' (ISC,
``analyzer/data/musicnn.LICENSE``), converted once from the checkpoints in musicnn 0.1.0's wheel by
``python -m fixtures.convert_musicnn``; this module is our own implementation of the forward pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyzer.stages.weights import check_shapes, frozen, read_weights
from analyzer.errors import ParameterError

DATA = Path(__file__).resolve().parents[1] / "data"
WEIGHTS_PATHS = {"mtt": DATA / "musicnn_mtt.safetensors", "msd": DATA / "musicnn_msd.safetensors"}
FORMAT = "musicnn-numpy-1"
_BN_EPS = 1e-3
_FRAME_BLOCK = 8192  # STFT frames computed at once in log_mel (8192 x 512 float32: 16 MB)  # tf.compat.v1.layers.batch_normalization's default

# the architecture of musicnn's build_musicnn (num_filt 1.6, mid end 64, back end 200), as (kernel rows,
# kernel columns as a fraction of the mel bands or an absolute width, filters)
TIMBRAL = {"timbral_74": 0.4, "timbral_77": 0.7}  # kernel 7 x int(fraction * n_mels), 204 filters
TEMPORAL = {"temporal_128": 128, "temporal_64": 64, "temporal_32": 32}  # kernel k x 1, 51 filters
TIMBRAL_ROWS, TIMBRAL_FILTERS, TEMPORAL_FILTERS = 7, 204, 51
MIDEND = ("midend_1", "midend_2", "midend_3")
MIDEND_ROWS, MIDEND_FILTERS, PENULTIMATE_UNITS = 7, 64, 200
FRONT_END_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "patch_frames", "log_scale")


@dataclass(frozen=True)
class FrontEnd:
    """The log-mel spectrogram the taggers were trained on (musicnn's configuration.py)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    patch_frames: int = 187  # 3 s: librosa.time_to_frames(3, sr, hop, n_fft) + 1
    log_scale: float = 10000.0

    @property
    def min_samples(self) -> int:
        """Shortest input (at ``sample_rate``) that gives one whole patch: 47,616 samples, 2.98 s."""
        return (self.patch_frames - 1) * self.hop_length

    @property
    def patch_s(self) -> float:
        """Seconds of audio a patch advances: 187 hops, 2.992 s."""
        return self.patch_frames * self.hop_length / self.sample_rate


@dataclass(frozen=True)
class Tagger:
    """A loaded musicnn tagger: its tags, front end and weights (float32, read-only)."""

    name: str  # "mtt" or "msd"
    model: str  # the authors' name: MTT_musicnn or MSD_musicnn
    tags: tuple[str, ...]
    front: FrontEnd
    weights: dict

    @property
    def embedding_size(self) -> int:
        return int(self.weights["dense.penultimate.bias"].shape[0])


@dataclass(frozen=True)
class TaggerOutput:
    """What a tagger says about one input: per patch and averaged over the patches."""

    tags: tuple[str, ...]
    patch_probabilities: np.ndarray  # (patches, tags) sigmoid outputs, musicnn's "taggram"
    patch_embeddings: np.ndarray  # (patches, 200) the back end's penultimate layer (after its batch norm)
    patch_s: float  # seconds between patch starts
    # (patches, 1506) the back end's input: the mid end's max and mean over each patch's frames.  Kept so
    # a model stacked on the back end (cnn's fine-tuned musicnn head) reads it without running the front end again
    patch_pooled: np.ndarray | None = None

    @property
    def probabilities(self) -> np.ndarray:
        """(tags,) the mean over patches of the tag probabilities (musicnn's tag ranking)."""
        return self.patch_probabilities.mean(axis=0)

    @property
    def embedding(self) -> np.ndarray:
        """(200,) the mean over patches of the penultimate layer."""
        return self.patch_embeddings.mean(axis=0)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most probable tags, most probable first, with their mean probabilities."""
        p = self.probabilities
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.tags[i], float(p[i])) for i in order]


# ---------------------------------------------------------------------- front end


@functools.lru_cache(maxsize=4)
def mel_basis(front: FrontEnd = FrontEnd()) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-style mel filters with area normalisation, 0 Hz to Nyquist.

    The filters of librosa's ``filters.mel`` with its defaults (``htk=False``; ``norm=1`` in librosa 0.7,
    ``'slaney'`` since), which musicnn used; computed in float64, returned float32 as librosa does.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_hz = np.linspace(0.0, front.sample_rate / 2, front.n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(front.sample_rate / 2), front.n_mels + 2))
    width = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def at_front_rate(samples: np.ndarray, sr: int, front: FrontEnd = FrontEnd()) -> np.ndarray:
    """Mono float32 samples at ``front.sample_rate`` (16 kHz), resampled with soxr's HQ filter where needed."""
    y = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sr == front.sample_rate:
        return y
    import soxr

    if sr <= 0:
        raise ParameterError(f"sample rate must be positive, got {sr}")
    return soxr.resample(y, sr, front.sample_rate, quality="HQ").astype(np.float32, copy=False)


def frame_count(n_samples: int, front: FrontEnd = FrontEnd()) -> int:
    """How many frames ``log_mel`` gives for ``n_samples`` samples at the front end's rate."""
    return 1 + n_samples // front.hop_length


def log_mel(samples: np.ndarray, sr: int, front: FrontEnd = FrontEnd(), *,
            frames: np.ndarray | None = None) -> np.ndarray:
    """musicnn's input representation of mono audio: (frames, n_mels) ``log10(10000 x + 1)`` of the mel power.

    Parameters
    ----------
    samples : numpy.ndarray
        Mono float samples, any length (the front end itself refuses nothing).
    sr : int
        Their sample rate, Hz; resampled to ``front.sample_rate`` (16 kHz) when different.
    front : FrontEnd
        The settings; the default is musicnn's.
    frames : numpy.ndarray of int, optional
        Only these frames (indices below ``frame_count`` of the 16 kHz samples), in this order: each
        frame's values depend on its own samples only, so they are those of the whole spectrogram.

    Returns
    -------
    numpy.ndarray
        float32, (1 + n // hop_length, n_mels) for n samples at 16 kHz (or (len(frames), n_mels)):
        frame i centred on sample i * hop_length.

    Notes
    -----
    The original (musicnn 0.1.0's ``batch_data``) loads the file with librosa 0.7: audioread/FFmpeg decoding,
    the channels averaged, resampy's ``kaiser_best`` to 16 kHz.  Here the caller decodes (the project's
    ``analyzer.stages.audio.decode``: PyAV, channels averaged, soxr) and soxr's HQ resampler brings other rates to
    16 kHz, so the samples differ from the original's by the resamplers' (both near-transparent) filters.
    The rest is the original's: a centred STFT with reflect padding (librosa 0.7's default; librosa 0.10
    changed it to zeros), a periodic Hann window, the power spectrum, the Slaney mel filters, and the mel
    power rounded to float16 (as the original does before the log; the training data were stored in
    float16 too) then ``log10(10000 x + 1)`` in float32.  Values past float16's range (65504) are clipped
    there instead of becoming infinite.
    """
    y = at_front_rate(samples, sr, front)
    n_fft, hop = front.n_fft, front.hop_length
    pad = n_fft // 2
    if len(y) <= pad:  # too short to reflect: zeros (only an input far shorter than a patch gets here)
        y = np.pad(y, pad)
    else:
        y = np.pad(y, pad, mode="reflect")
    every = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    if frames is None:
        frames = every
    else:
        idx = np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(every)):
            raise ParameterError(f"frames must lie within 0..{len(every) - 1}")
        frames = every[idx]  # a copy of the chosen frames only
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    basis = mel_basis(front).T
    mel = np.empty((len(frames), basis.shape[1]), dtype=np.float32)
    # a block of frames at a time: the whole file's windowed frames and complex spectrum would hold
    # ~0.45 GB for 20 minutes; each frame's values do not depend on the block
    for a in range(0, len(frames), _FRAME_BLOCK):
        spec = np.fft.rfft(frames[a : a + _FRAME_BLOCK] * window, axis=1)
        power = (spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2)
        mel[a : a + _FRAME_BLOCK] = power @ basis
    mel = np.minimum(mel, np.float32(np.finfo(np.float16).max)).astype(np.float16).astype(np.float32)
    mel *= np.float32(front.log_scale)
    mel += np.float32(1.0)
    return np.log10(mel, out=mel)


def patches(spectrogram: np.ndarray, front: FrontEnd = FrontEnd()) -> np.ndarray:
    """(patches, patch_frames, n_mels): consecutive non-overlapping patches; the frames after the last
    whole patch are left out, as musicnn does by default (``input_overlap=False``)."""
    n = spectrogram.shape[0] // front.patch_frames
    if n == 0:
        raise ParameterError(
            f"musicnn needs at least {front.min_samples / front.sample_rate:.2f} s of audio "
            f"(one {front.patch_frames}-frame patch), got {spectrogram.shape[0]} frames"
        )
    return spectrogram[: n * front.patch_frames].reshape(n, front.patch_frames, spectrogram.shape[1])


# ---------------------------------------------------------------------- network


def _batch_norm(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    """Inference-mode batch norm over the last axis, in place on ``x``."""
    scale, shift = _bn_affine(w, name)
    x *= scale
    x += shift
    return x


def _bn_affine(w: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = f"bn.{name}."
    scale = (w[p + "gamma"] / np.sqrt(w[p + "var"] + np.float32(_BN_EPS))).astype(np.float32)
    return scale, (w[p + "beta"] - w[p + "mean"] * scale).astype(np.float32)


def _conv_max_over_frequency(cols: np.ndarray, kernel: np.ndarray, bias: np.ndarray, n_pos: int,
                             w: dict, name: str) -> np.ndarray:
    """ReLU, batch norm, max over frequency of a convolution given as im2col rows (frames * n_pos, taps).

    The batch norm is an increasing (or, where gamma < 0, decreasing) map per channel, and so are the bias
    and ReLU, so the max over frequency of BN(ReLU(z + b)) is BN(ReLU(max z + b)) (min z where the scale is
    negative, taken as -max(-z) with that channel's kernel negated, which is exact): the same value as the
    original's order, from the same element, without passing the whole (frames, n_pos, filters) output
    through the elementwise layers.
    """
    scale, shift = _bn_affine(w, name)
    sign = np.where(scale < 0, np.float32(-1.0), np.float32(1.0))
    z = (cols @ (kernel * sign)).reshape(-1, n_pos, kernel.shape[1])
    top = z.max(axis=1)
    top *= sign
    top += bias
    np.maximum(top, 0.0, out=top)
    top *= scale
    top += shift
    return top


def _front_end(x: np.ndarray, w: dict, n_mels: int) -> np.ndarray:
    """(frames, n_mels) normalised patch -> (frames, 561) timbral and temporal features."""
    t = x.shape[0]
    out = []
    xp = np.pad(x, ((TIMBRAL_ROWS // 2, TIMBRAL_ROWS // 2), (0, 0)))
    for name, frac in TIMBRAL.items():
        width = int(frac * n_mels)
        cols = np.lib.stride_tricks.sliding_window_view(xp, (TIMBRAL_ROWS, width))  # (t, n_pos, 7, width)
        n_pos = cols.shape[1]
        kernel = w[f"conv.{name}.kernel"].reshape(TIMBRAL_ROWS * width, -1)
        out.append(_conv_max_over_frequency(cols.reshape(t * n_pos, -1), kernel, w[f"conv.{name}.bias"], n_pos,
                                            w, name))
    # the temporal convolutions, "same" padded as TensorFlow pads an even kernel (one more row after):
    # their windows nest in the longest one's, so one im2col serves all three
    longest = max(TEMPORAL.values())
    xp = np.pad(x, ((longest // 2 - 1, longest // 2), (0, 0)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, longest, axis=0)  # (t, n_mels, longest)
    cols = np.ascontiguousarray(cols).reshape(t * n_mels, longest)
    for name, k in TEMPORAL.items():
        start = (longest - 1) // 2 - (k - 1) // 2
        kernel = w[f"conv.{name}.kernel"].reshape(k, -1)
        out.append(_conv_max_over_frequency(cols[:, start : start + k], kernel, w[f"conv.{name}.bias"], n_mels,
                                            w, name))
    return np.concatenate(out, axis=1)


def _conv_time(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 1-D convolution over frames with zero padding keeping the length, then ReLU: (t, c) -> (t, filters)."""
    k = kernel.shape[0]
    xp = np.pad(x, ((k // 2, k // 2), (0, 0)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, k, axis=0)  # (t, c, k)
    # the kernel (k, c, 1, filters) reordered to the window's (c, k) layout
    z = cols.reshape(x.shape[0], -1) @ kernel[:, :, 0, :].transpose(1, 0, 2).reshape(-1, kernel.shape[-1])
    z += bias
    return np.maximum(z, 0.0, out=z)


def pool_patches(tagger: Tagger, spec_patches: np.ndarray) -> np.ndarray:
    """The front and mid ends on each patch, pooled over its frames: the back end's input.

    Parameters
    ----------
    tagger : Tagger
        From ``load_tagger``.
    spec_patches : numpy.ndarray
        (patches, patch_frames, n_mels) from ``patches``.

    Returns
    -------
    numpy.ndarray
        float32 (patches, 1506): per mid-end feature its max and mean over the patch's frames, interleaved
        as TensorFlow flattens their (753, 2) concatenation.  Nearly all of the network's cost is here.
    """
    w = tagger.weights
    pooled = []
    for x in spec_patches:
        x = _batch_norm(x.astype(np.float32, copy=True), w, "input_bn")
        front = _front_end(x, w, tagger.front.n_mels)
        feats = [front]
        h = front
        for i, name in enumerate(MIDEND):
            y = _batch_norm(_conv_time(h, w[f"conv.{name}.kernel"], w[f"conv.{name}.bias"]), w, name)
            h = y if i == 0 else y + h  # the second and third layers are residual
            feats.append(h)
        m = np.concatenate(feats, axis=1)  # (frames, 753)
        pooled.append(np.stack([m.max(axis=0), m.mean(axis=0, dtype=np.float32)], axis=1).reshape(-1))
    return np.stack(pooled)


def back_end(tagger: Tagger, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(patches, 1506) pooled features -> (patches, tags) probabilities and (patches, 200) penultimate features."""
    w = tagger.weights
    z = _batch_norm(np.array(pooled, dtype=np.float32), w, "pool_bn")
    h = z @ w["dense.penultimate.kernel"]
    h += w["dense.penultimate.bias"]
    np.maximum(h, 0.0, out=h)
    penultimate = _batch_norm(h, w, "penultimate")
    logits = penultimate @ w["dense.logits.kernel"] + w["dense.logits.bias"]
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), penultimate


def predict_spectrogram(tagger: Tagger, spectrogram: np.ndarray) -> TaggerOutput:
    """The tagger on a log-mel spectrogram from ``log_mel`` (for checks against the original network).

    Parameters
    ----------
    tagger : Tagger
        From ``load_tagger``.
    spectrogram : numpy.ndarray
        (frames, n_mels) as ``log_mel`` returns it.

    Returns
    -------
    TaggerOutput
        Per patch and mean probabilities and penultimate features.

    Raises
    ------
    ParameterError
        Fewer frames than one patch, or the wrong number of mel bands.
    """
    s = np.asarray(spectrogram, dtype=np.float32)
    if s.ndim != 2 or s.shape[1] != tagger.front.n_mels:
        raise ParameterError(f"musicnn expects a (frames, {tagger.front.n_mels}) spectrogram, got {s.shape}")
    pooled = pool_patches(tagger, patches(s, tagger.front))
    probs, emb = back_end(tagger, pooled)
    return TaggerOutput(tags=tagger.tags, patch_probabilities=probs, patch_embeddings=emb,
                        patch_s=tagger.front.patch_s, patch_pooled=pooled)


def predict(tagger: Tagger, samples: np.ndarray, sr: int) -> TaggerOutput:
    """Tag mono audio with a musicnn tagger.

    Parameters
    ----------
    tagger : Tagger
        From ``load_tagger("mtt")`` or ``load_tagger("msd")``.
    samples : numpy.ndarray
        Mono float samples.
    sr : int
        Their sample rate, Hz (resampled to 16 kHz).

    Returns
    -------
    TaggerOutput
        ``patch_probabilities`` (patches, 50) and ``patch_embeddings`` (patches, 200) for each
        non-overlapping 3 s patch (2.992 s apart; the remainder after the last whole patch is not read,
        as in the original), and their means ``probabilities`` (50,) and ``embedding`` (200,).

    Raises
    ------
    ParameterError
        Input shorter than one patch (2.98 s).  The original fails there too (its batching loop makes no
        patch and it raises an UnboundLocalError); the authors' training padded short clips by repetition,
        but tagging a repeated fragment would report a confidence the audio does not support, so we refuse.
    """
    return predict_spectrogram(tagger, log_mel(samples, sr, tagger.front))


# ---------------------------------------------------------------------- loading


def expected_shapes(n_mels: int, n_tags: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a tagger file must hold and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, n: int) -> None:
        for part in ("gamma", "beta", "mean", "var"):
            shapes[f"bn.{name}.{part}"] = (n,)

    bn("input_bn", 1)
    for name, frac in TIMBRAL.items():
        shapes[f"conv.{name}.kernel"] = (TIMBRAL_ROWS, int(frac * n_mels), 1, TIMBRAL_FILTERS)
        shapes[f"conv.{name}.bias"] = (TIMBRAL_FILTERS,)
        bn(name, TIMBRAL_FILTERS)
    for name, k in TEMPORAL.items():
        shapes[f"conv.{name}.kernel"] = (k, 1, 1, TEMPORAL_FILTERS)
        shapes[f"conv.{name}.bias"] = (TEMPORAL_FILTERS,)
        bn(name, TEMPORAL_FILTERS)
    n_front = len(TIMBRAL) * TIMBRAL_FILTERS + len(TEMPORAL) * TEMPORAL_FILTERS
    c_in = n_front
    for name in MIDEND:
        shapes[f"conv.{name}.kernel"] = (MIDEND_ROWS, c_in, 1, MIDEND_FILTERS)
        shapes[f"conv.{name}.bias"] = (MIDEND_FILTERS,)
        bn(name, MIDEND_FILTERS)
        c_in = MIDEND_FILTERS
    n_pool = 2 * (n_front + len(MIDEND) * MIDEND_FILTERS)
    bn("pool_bn", n_pool)
    shapes["dense.penultimate.kernel"] = (n_pool, PENULTIMATE_UNITS)
    shapes["dense.penultimate.bias"] = (PENULTIMATE_UNITS,)
    bn("penultimate", PENULTIMATE_UNITS)
    shapes["dense.logits.kernel"] = (PENULTIMATE_UNITS, n_tags)
    shapes["dense.logits.bias"] = (n_tags,)
    return shapes


def load_tagger(name: str = "mtt", path: str | Path | None = None) -> Tagger:
    """A musicnn tagger from its safetensors file (cached per path).

    Parameters
    ----------
    name : {"mtt", "msd"}
        MTT_musicnn (MagnaTagATune's 50 tags) or MSD_musicnn (the Million Song Dataset's top 50 last.fm tags).
    path : str or Path, optional
        Another file of the same format (the vendored one by default).

    Returns
    -------
    Tagger
        Frozen; its arrays are read-only.

    Raises
    ------
    ParameterError
        An unknown name, or a file that cannot be read or does not hold the network (one line).
    """
    if name not in WEIGHTS_PATHS:
        raise ParameterError(f"musicnn tagger must be one of {', '.join(WEIGHTS_PATHS)}, got {name!r}")
    return _load(name, str(path or WEIGHTS_PATHS[name]))


@functools.lru_cache(maxsize=4)
def _load(name: str, path: str) -> Tagger:
    meta, tensors = read_weights(path, name="musicnn", article="a", fmt=FORMAT)
    want_model = {"mtt": "MTT_musicnn", "msd": "MSD_musicnn"}[name]
    if meta.get("model") != want_model:
        raise ParameterError(f"{path}: holds the musicnn model {meta.get('model')!r}, expected {want_model}")
    try:
        front = FrontEnd(
            sample_rate=int(meta["sample_rate"]), n_fft=int(meta["n_fft"]), hop_length=int(meta["hop_length"]),
            n_mels=int(meta["n_mels"]), patch_frames=int(meta["patch_frames"]), log_scale=float(meta["log_scale"]),
        )
        tags = tuple(meta["tags"].split("\n"))
    except (KeyError, ValueError) as exc:
        raise ParameterError(f"{path}: musicnn metadata incomplete or malformed ({exc})") from None
    if (min(front.sample_rate, front.n_fft, front.hop_length, front.n_mels, front.patch_frames) <= 0
            or front.n_fft % 2 or int(TIMBRAL["timbral_77"] * front.n_mels) > front.n_mels
            or len(set(tags)) != len(tags) or not all(tags)):
        raise ParameterError(f"{path}: musicnn metadata describes a network this code does not run")
    expected = expected_shapes(front.n_mels, len(tags))
    check_shapes(tensors, expected, path=path, name="musicnn")
    for key in expected:
        if key.endswith(".var") and np.any(tensors[key] < 0):
            raise ParameterError(f"{path}: musicnn batch-norm variance {key} is negative")
    return Tagger(name=name, model=want_model, tags=tags, front=front,
                  weights={k: frozen(v) for k, v in tensors.items()})
