"""Echo Nest-style 12-d segment timbre: the segment's auditory surface on 12 basis functions.

The Echo Nest described its timbre as the shape of a segment's
spectro-temporal surface, "independently of pitch and loudness", projected on
12 fixed basis functions ("template segments"), most important first: 1
average loudness, 2 brightness, 3 flatness, 4 attack, the rest finer detail.

A segment's **patch** is its auditory spectrogram (:mod:`analyzer.stages.auditory`:
23 critical bands in dB, floored at -60) over the *whole segment*, resampled to
``n_frames`` time steps (each the mean of its share of the segment's frames;
a segment shorter than that repeats frames), in dB above the floor.  Whole-
segment, time-normalized surfaces are what the Echo Nest's numbers follow: a
linear map fitted on one song's Echo Nest timbre and applied to the other
predicts it at correlation 0.84-0.95 on dims 1-3 with this patch, against
0.5-0.85 when the patch is the segment's first 140 ms (``bench/fidelity.py``,
diagnostics only: no fitted map ships).

The dimensions, each a definition rather than a fit to the Echo Nest:

1. **loudness**: the patch's mean, dB above the floor (0 for silence, ~50 for a
   loud segment), as the Echo Nest's first coefficient.
2. **brightness**: mostly the patch's slope across bands (first Legendre
   polynomial over the bands, low to high).
3. **flatness**: mostly the negated curvature across bands (second Legendre
   polynomial: positive when the middle bands stand above both ends, as in a
   flat, noise-like spectrum after the ear's weighting), with a little rise
   over time.
4. **attack**: mostly the negated slope over time (first Legendre polynomial
   over the segment's frames): positive when the surface falls from its start.

   The exact shapes of 2-4 (a few Legendre weights each, ``TimbreParams``) are
   what the documentation leaves open; they were fitted to the Echo Nest's
   coefficients on its two songs we have and checked across them.
5-12. the leading principal components of what dims 1-4 leave of the patches
   of a synthesized corpus (``fixtures/fit_timbre.py``: General MIDI programs,
   drums, noise, clicks), each signed so that its largest loading is positive.

Dims 2-12 project the patch minus the corpus's mean patch onto unit-norm
basis functions that are orthogonal to each other and to a constant patch, so
they are in dB: a pattern ``x`` dB strong in every one of the
``n_bands * n_frames`` cells scores ``x * sqrt(n_bands * n_frames)``; each is
then divided by its ``TimbreParams.spread`` (our spread against the Echo
Nest's on five songs), so that distances between segments are on their scale.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from analyzer.errors import ParameterError

N_DIMS = 12
N_COMPONENTS = N_DIMS - 1
BASIS_PATH = Path(__file__).resolve().parents[1] / "data" / "timbre_basis.npz"


# A shape is a sum of products of Legendre polynomials over the bands (low to high) and over
# the segment's time (start to end): ((band degree, time degree, weight), ...).
Shape = tuple[tuple[int, int, float], ...]


@dataclass(frozen=True)
class TimbreParams:
    n_bands: int = 23  # the auditory spectrogram's critical bands at 22050 Hz
    n_frames: int = 16  # the segment, resampled in time
    floor_db: float = -60.0
    # Dims 2-4.  The documentation names what each measures (brightness, flatness, attack) but
    # not its exact shape; each shape below is the least-squares fit, within band degree <= 2 and
    # time degree <= 1, of the Echo Nest's own coefficient on its two songs we have, normalized
    # (bench/fidelity.py).  Fitted on one song, scored on the other: brightness 0.95 / 0.91,
    # flatness 0.93 / 0.94, attack 0.73 / 0.83 (correlation, each direction); the two songs'
    # own fits agree to within 0.1 on every weight but attack's band-slope cross term.
    brightness: Shape = ((1, 0, 0.93), (2, 0, 0.32), (1, 1, -0.16), (2, 1, -0.13))
    flatness: Shape = ((2, 0, -0.92), (0, 1, 0.25), (1, 0, 0.18), (2, 1, 0.26))
    attack: Shape = ((0, 1, -0.93), (2, 0, -0.33), (1, 1, -0.11), (2, 1, 0.13))
    # Dims 2-12 are divided by these: each dimension's spread over a song's segments against the
    # Echo Nest's (ours / theirs, ``score.py``'s ``timbre_std_ratio_dims1to12`` on matched segments),
    # the geometric mean over the five Echo Nest pairs.  Clients threshold Euclidean distances between
    # segments, so the scale per dimension is part of the meaning; the basis leaves it open (unit-norm
    # functions).  Left one pair out (``bench.fidelity --loso``), the scale fitted on four puts 50 of
    # the 60 held-out dims within 0.8-1.25 of the Echo Nest's spread against 39 unscaled, and no
    # fold loses (9->11, 6->9, 8->12, 8->9, 8->9).  Dim 1 is the mean level in dB, a definition.
    # Not part of the basis: the stored basis does not record it.
    spread: tuple[float, ...] = (0.947, 0.899, 0.728, 1.03, 0.716, 0.824, 0.885, 1.356, 0.937, 0.763, 0.94)

    def __post_init__(self) -> None:
        if len(self.spread) != N_COMPONENTS or not all(np.isfinite(v) and v > 0 for v in self.spread):
            raise ParameterError(f"spread must be {N_COMPONENTS} positive numbers (dims 2-12), got {self.spread}")

    @property
    def patch_size(self) -> int:
        return self.n_bands * self.n_frames


@dataclass(frozen=True)
class TimbreBasis:
    components: np.ndarray  # (11, n_bands * n_frames), unit-norm rows, orthogonal, each orthogonal to a constant
    mean_patch: np.ndarray  # (n_bands * n_frames,) the fitting corpus's mean patch, dB above the floor
    params: TimbreParams


def _legendre(n: int, degree: int) -> np.ndarray:
    from numpy.polynomial import legendre

    return legendre.legval(np.linspace(-1.0, 1.0, n), [0.0] * degree + [1.0])


def _shape(params: TimbreParams, shape: Shape) -> np.ndarray:
    v = sum(w * np.outer(_legendre(params.n_bands, i), _legendre(params.n_frames, j)) for i, j, w in shape)
    v = np.asarray(v, dtype=np.float64).ravel()
    return v - v.mean()


def defined_directions(params: TimbreParams) -> np.ndarray:
    """(3, patch_size) the brightness, flatness and attack functions: orthonormal, orthogonal to a constant.

    Element ``[k, band * n_frames + frame]``; bands low to high, frames early to
    late.  The three shapes are made orthonormal symmetrically (Lowdin: the
    orthonormal set closest to them), so no one of them is bent to fit the others.
    """
    raw = np.array([_shape(params, params.brightness), _shape(params, params.flatness), _shape(params, params.attack)])
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    vals, vecs = np.linalg.eigh(raw @ raw.T)
    return (vecs @ np.diag(vals**-0.5) @ vecs.T) @ raw


def segment_patches(
    *, bands_db: np.ndarray, start_frames: np.ndarray, end_frames: np.ndarray, params: TimbreParams
) -> np.ndarray:
    """(n_segments, n_bands * n_frames) time-normalized patches in dB above the floor, band-major.

    Element ``[i, band * n_frames + k]`` is segment i's mean level in ``band``
    over the k-th of ``n_frames`` equal parts of the segment.  A segment of
    fewer frames than that repeats frames (nearest), never reading the next one.
    """
    d = np.asarray(bands_db)
    starts = np.asarray(start_frames, dtype=np.int64).reshape(-1)
    ends = np.asarray(end_frames, dtype=np.int64).reshape(-1)
    if d.ndim != 2 or d.shape[0] != params.n_bands:
        raise ParameterError(f"bands_db must be ({params.n_bands} bands, frames), got shape {d.shape}")
    if starts.shape != ends.shape:
        raise ParameterError(f"{starts.size} segment starts but {ends.size} ends")
    if starts.size == 0:
        return np.zeros((0, params.patch_size), dtype=np.float32)
    n_total = d.shape[1]
    if n_total == 0:
        raise ParameterError("bands_db has no frames")
    if starts.min() < 0:
        raise ParameterError(f"segment start frame {int(starts.min())} is negative")
    starts = np.minimum(starts, n_total - 1)
    ends = np.clip(ends, starts + 1, n_total)
    above = np.clip(d.astype(np.float64) - params.floor_db, 0.0, None)
    csum = np.concatenate((np.zeros((d.shape[0], 1)), np.cumsum(above, axis=1)), axis=1)
    # the k-th part of a segment spans [lo, hi): equal shares, at least one frame each
    k = np.arange(params.n_frames + 1)
    length = (ends - starts).astype(np.float64)
    edges = starts[:, None] + np.floor(length[:, None] * k[None, :] / params.n_frames).astype(np.int64)
    lo = np.minimum(edges[:, :-1], ends[:, None] - 1)
    hi = np.maximum(edges[:, 1:], lo + 1)
    sums = csum[:, hi] - csum[:, lo]  # (bands, segments, parts)
    patch = sums / (hi - lo)[None, :, :]
    return np.ascontiguousarray(patch.transpose(1, 0, 2).reshape(len(starts), -1), dtype=np.float32)


def timbre_vectors(patches: np.ndarray, basis: TimbreBasis) -> np.ndarray:
    """(n, 12): mean level above the floor, then 11 basis projections in dB, each over its ``params.spread``."""
    patches = np.asarray(patches, dtype=np.float64)
    size = basis.params.patch_size
    if patches.ndim != 2 or patches.shape[1] != size:
        raise ParameterError(f"patches must be (n, {size}) for this basis, got shape {patches.shape}")
    out = np.empty((len(patches), N_DIMS))
    out[:, 0] = patches.mean(axis=1)
    out[:, 1:] = ((patches - basis.mean_patch) @ basis.components.T) / np.asarray(basis.params.spread)
    return out


# TimbreParams fields applied after the basis, which the basis neither records nor depends on
_NOT_IN_BASIS = frozenset({"spread"})


def save_basis(path: Path, basis: TimbreBasis) -> None:
    np.savez_compressed(
        path,
        components=basis.components.astype(np.float32),
        mean_patch=basis.mean_patch.astype(np.float32),
        **{f"param_{k}": np.asarray(v) for k, v in asdict(basis.params).items() if k not in _NOT_IN_BASIS},
    )


def load_basis(path: Path | None = None, *, params: TimbreParams | None = None) -> TimbreBasis:
    """The stored basis (read once per process per path); ParameterError if it does not fit ``params``."""
    return _load_basis(str(path or BASIS_PATH), params or TimbreParams())


@functools.lru_cache(maxsize=8)
def _load_basis(path: str, params: TimbreParams) -> TimbreBasis:
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    # a damaged archive fails while its members are read, with errors from zip, zlib and
    # numpy's header parser (SyntaxError, tokenize errors...): at this file boundary any
    # failure to read means the same thing to the user
    except Exception as exc:  # noqa: BLE001
        raise ParameterError(f"cannot read the timbre basis {path}: {type(exc).__name__}: {exc}") from None
    if not all(isinstance(v, np.ndarray) for v in data.values()):
        raise ParameterError(f"cannot read the timbre basis {path}: it is not an array archive")
    size = params.patch_size
    comps, mean = data.get("components"), data.get("mean_patch")
    if comps is None or comps.shape != (N_COMPONENTS, size):
        got = None if comps is None else comps.shape
        raise ParameterError(f"timbre basis {path}: components have shape {got}, expected {(N_COMPONENTS, size)}")
    if mean is None or mean.shape != (size,):
        got = None if mean is None else mean.shape
        raise ParameterError(f"timbre basis {path}: mean patch has shape {got}, expected {(size,)}")
    for name, want in asdict(params).items():
        if name in _NOT_IN_BASIS:
            continue
        key = f"param_{name}"
        if key not in data:
            raise ParameterError(f"timbre basis {path} does not record the {name} it was fitted with")
        got, want_arr = np.asarray(data[key], dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want_arr.shape or not np.allclose(got, want_arr):
            raise ParameterError(f"timbre basis {path} was fitted with {name}={got.tolist()}, not {want}")
    if not (np.isfinite(comps).all() and np.isfinite(mean).all()):
        raise ParameterError(f"timbre basis {path} holds non-finite values")
    comps = comps.astype(np.float64)
    comps.setflags(write=False)
    mean = mean.astype(np.float64)
    mean.setflags(write=False)
    return TimbreBasis(components=comps, mean_patch=mean, params=params)
