"""Echo Nest-style 12-d segment timbre on a fitted spectro-temporal basis.

A segment's *patch* is its first ``n_frames`` STFT frames (hop 512 at 22050 Hz,
so about 140 ms) of the 128-band log-mel spectrogram, power-pooled to
``n_bands`` bands and expressed in dB above the -60 dB floor.  The Echo Nest
described its timbre the same way: a segment's opening spectro-temporal
surface projected onto 12 fixed basis functions.

The 12 dimensions:

1. level: the power mean of the patch in dB above the floor (0..~60).  A power
   mean, not the mean of the dB values, so that a pure tone, which leaves most
   bands at the floor, still moves by exactly its change in level.
2. brightness: positive = more high-frequency energy.
3. flatness: positive = flat, noise-like spectrum; negative = peaky spectrum
   (energy in a few bands).
4. attack: positive = energy concentrated at the patch's start (a sharp
   attack that decays); negative = a swell.
5-12. the remaining directions of largest variance, in decreasing order.

Dimensions 2-12 project the level-removed patch (minus the fitting corpus's
mean patch) onto unit-norm basis functions, so they are in dB: a pattern that
is ``x`` dB strong in every one of the ``n_bands * n_frames`` cells scores
``x * sqrt(n_bands * n_frames)``.  No per-dimension scaling is applied.

How the basis was fitted (``fixtures/fit_timbre.py`` regenerates it): patches
of a synthesized corpus (General MIDI instruments rendered with FluidSynth and
the FluidR3 soundfont, alone and in mixtures, plus noise bursts and clicks)
have their mean level removed and are centred on the corpus mean patch.
Dimensions 2-4 are *descriptor regressions*: for each of a brightness
descriptor (the power spectral centroid, in bands), a flatness descriptor
(minus the spread across bands of the time-averaged band levels, in dB) and
an attack descriptor (the level of the first two frames minus that of the
last two, in dB), the direction within the corpus's 16 leading principal
components that best predicts the descriptor (least
squares), orthogonalised against the directions before it, unit norm, signed
so that it correlates positively with its descriptor.  Dimensions 5-12 are the
leading principal components of what the three leave over, each signed so that
its largest loading is positive.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ParameterError

N_DIMS = 12
N_COMPONENTS = N_DIMS - 1
BASIS_PATH = Path(__file__).resolve().parent / "data" / "timbre_basis.npz"


@dataclass(frozen=True)
class TimbreParams:
    # pooled from the 128-band log-mel.  48, not 24: unit-norm projections of
    # a patch pattern grow as sqrt(n_bands * n_frames), and with 24 bands the
    # spreads of dims 2-12 on GTZAN pop/rock/disco came out 0.45-1.1 times the
    # Echo Nest's; 48 bands (2-3 mel bands each) give 0.6-1.6 with no
    # per-dimension scaling, and slightly cleaner brightness/flatness/attack fits
    n_bands: int = 48
    n_frames: int = 6  # frames from the segment's start, hop 512 at 22050 Hz
    floor_db: float = -60.0
    # the STFT the log-mel came from (analyzer.features.FeatureParams); sets the dB reference
    n_fft: int = 2048
    sr: int = 22050

    @property
    def patch_size(self) -> int:
        return self.n_bands * self.n_frames

    @property
    def reference_db(self) -> float:
        """Mel-band power (librosa units) that reads 0 dB.

        That is the expected power in every mel band of white noise whose RMS
        equals a full-scale sine's (mean square 1/2), the same reference the
        loudness stage uses.  librosa's Hann-windowed STFT gives such noise
        0.5 * sum(w^2) = 0.5 * 0.375 * n_fft per bin, and each Slaney-normalised
        mel filter sums to n_fft / sr (within 3% for the analyzer's bank).
        With this reference a white-ish full-scale signal reads about 0 dB in
        every band, and the power mean over all bands of any signal reads
        close to its RMS level re a full-scale sine.
        """
        return float(10.0 * np.log10(0.5 * 0.375 * self.n_fft * self.n_fft / self.sr))


@dataclass(frozen=True)
class TimbreBasis:
    components: np.ndarray  # (11, n_bands * n_frames), unit-norm rows, each orthogonal to a constant patch
    mean_patch: np.ndarray  # (n_bands * n_frames,) the fitting corpus's mean level-removed patch, dB
    params: TimbreParams


def _band_edges(n_mels: int, n_bands: int) -> np.ndarray:
    return np.round(np.linspace(0, n_mels, n_bands + 1)).astype(int)


def segment_patches(
    *, log_mel_db: np.ndarray, start_frames: np.ndarray, end_frames: np.ndarray, params: TimbreParams
) -> np.ndarray:
    """(n_segments, n_bands * n_frames) patches in dB above the floor, band-major.

    Element ``[i, band * n_frames + frame]`` is segment i's level in pooled band
    ``band`` at frame ``start + frame``.  A segment shorter than ``n_frames``
    repeats its last frame rather than reading into the next segment.
    """
    log_mel_db = np.asarray(log_mel_db)
    starts = np.asarray(start_frames, dtype=np.int64).reshape(-1)
    ends = np.asarray(end_frames, dtype=np.int64).reshape(-1)
    if log_mel_db.ndim != 2:
        raise ParameterError(f"log_mel_db must be (mel bands, frames), got shape {log_mel_db.shape}")
    n_mels, n_total = log_mel_db.shape
    if n_mels < params.n_bands:
        raise ParameterError(f"{n_mels} mel bands cannot be pooled into {params.n_bands}")
    if starts.shape != ends.shape:
        raise ParameterError(f"{starts.size} segment starts but {ends.size} ends")
    if starts.size == 0:
        return np.zeros((0, params.patch_size), dtype=np.float32)
    if n_total == 0:
        raise ParameterError("log_mel_db has no frames")
    if starts.min() < 0:
        raise ParameterError(f"segment start frame {int(starts.min())} is negative")

    starts = np.minimum(starts, n_total - 1)
    last = np.clip(ends - 1, starts, n_total - 1)
    frames = np.minimum(starts[:, None] + np.arange(params.n_frames)[None, :], last[:, None])

    power = 10.0 ** (log_mel_db[:, frames].astype(np.float64) / 10.0)  # (mels, seg, frames)
    edges = _band_edges(n_mels, params.n_bands)
    pooled = np.add.reduceat(power, edges[:-1], axis=0) / np.diff(edges)[:, None, None]
    db = 10.0 * np.log10(np.maximum(pooled, 1e-30)) - params.reference_db
    above = np.clip(db - params.floor_db, 0.0, None)  # (bands, seg, frames)
    return np.ascontiguousarray(above.transpose(1, 0, 2).reshape(len(starts), -1), dtype=np.float32)


def timbre_vectors(patches: np.ndarray, basis: TimbreBasis) -> np.ndarray:
    """(n, 12): power-mean level above the floor, then 11 basis projections in dB."""
    patches = np.asarray(patches, dtype=np.float64)
    size = basis.params.patch_size
    if patches.ndim != 2 or patches.shape[1] != size:
        raise ParameterError(f"patches must be (n, {size}) for this basis, got shape {patches.shape}")
    out = np.empty((len(patches), N_DIMS))
    # cells clipped to the floor count as floor power, so silence reads 0
    out[:, 0] = 10.0 * np.log10(np.mean(10.0 ** (patches / 10.0), axis=1))
    # the components are orthogonal to a constant patch, so projecting the raw
    # patch equals projecting the level-removed one
    out[:, 1:] = (patches - basis.mean_patch) @ basis.components.T
    return out


def save_basis(path: Path, basis: TimbreBasis) -> None:
    np.savez_compressed(
        path,
        components=basis.components.astype(np.float32),
        mean_patch=basis.mean_patch.astype(np.float32),
        **{f"param_{k}": np.asarray(v) for k, v in asdict(basis.params).items()},
    )


def load_basis(path: Path | None = None, *, params: TimbreParams | None = None) -> TimbreBasis:
    """The stored basis (read once per process per path); ParameterError if it does not fit ``params``."""
    return _load_basis(str(path or BASIS_PATH), params or TimbreParams())


@functools.lru_cache(maxsize=8)
def _load_basis(path: str, params: TimbreParams) -> TimbreBasis:
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ParameterError(f"cannot read the timbre basis {path}: {exc}") from exc
    size = params.patch_size
    comps, mean = data.get("components"), data.get("mean_patch")
    if comps is None or comps.shape != (N_COMPONENTS, size):
        got = None if comps is None else comps.shape
        raise ParameterError(f"timbre basis {path}: components have shape {got}, expected {(N_COMPONENTS, size)}")
    if mean is None or mean.shape != (size,):
        got = None if mean is None else mean.shape
        raise ParameterError(f"timbre basis {path}: mean patch has shape {got}, expected {(size,)}")
    for name, want in asdict(params).items():
        key = f"param_{name}"
        if key not in data:
            raise ParameterError(f"timbre basis {path} does not record the {name} it was fitted with")
        if not np.isclose(float(data[key]), float(want)):
            raise ParameterError(f"timbre basis {path} was fitted with {name}={data[key].item()}, not {want}")
    if not (np.isfinite(comps).all() and np.isfinite(mean).all()):
        raise ParameterError(f"timbre basis {path} holds non-finite values")
    comps = comps.astype(np.float64)
    comps.setflags(write=False)
    mean = mean.astype(np.float64)
    mean.setflags(write=False)
    return TimbreBasis(components=comps, mean_patch=mean, params=params)
