"""Checks of a saved model before anything is built from it.

A model version is a manifest (JSON) and arrays (safetensors).  The safetensors header can be intact
while the data behind it is not: random bytes gave a ValueError traceback, an out-of-range sparse
index a segmentation fault inside scipy, NaN factors empty playlists with exit 0, a manifest without
a key a KeyError.  Everything `persist.load` reads is checked here first (types, shapes, index ranges,
finiteness, magnitudes) and refused with one InputError that names the file and says to refit.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from analyzer.errors import InputError

from .data import MAX_VALUE
from .fusion import SOURCES
from .models import ALSParams

# Largest |value| of an ALS factor or an EASE weight.  A real fit's are of order 1 (regularized least
# squares on confidences of at most ~100); 1e6 leaves room for any fit and keeps every score (a sum
# of at most a few thousand products of two such values) far inside float32.
MAX_FACTOR = 1e6

WEIGHTINGS = ("bm25", "log", "binary")


class _Damaged(Exception):
    """One problem with a model file; `check_manifest` and `check_arrays` add which file."""


def _refuse(path: Path, problem: str) -> InputError:
    version = path.parent
    # a version of a model folder (M/models/vNNNN/) says which folder to refit
    how = f"recommend fit --model {version.parent.parent}" if version.parent.name == "models" else "recommend fit"
    return InputError(f"{path}: damaged model ({problem}); refit it ({how})")


def check_manifest(manifest: object, path: Path) -> None:
    """Refuse a manifest that `persist.load` cannot build a model from.

    Parameters
    ----------
    manifest : object
        The parsed JSON of manifest.json.
    path : Path
        manifest.json, for the message.

    Raises
    ------
    InputError
        Not an object; a required key missing; a value of the wrong type or out of range; lists of
        item names, titles and artists of different lengths.
    """
    try:
        _manifest(manifest)
    except _Damaged as exc:
        raise _refuse(path, str(exc)) from None


def check_arrays(arrays: dict[str, np.ndarray], manifest: dict, path: Path) -> None:
    """Refuse arrays that do not make the model the (already checked) manifest describes.

    Parameters
    ----------
    arrays : dict of str to ndarray
        Everything in arrays.safetensors.
    manifest : dict
        The manifest, passed by `check_manifest`.
    path : Path
        arrays.safetensors, for the message.

    Raises
    ------
    InputError
        An array missing, of the wrong kind (float / integer) or shape; a sparse matrix whose index
        pointer or indices are out of range (scipy does not check them: they crashed the process);
        values that are not finite or out of range.
    """
    try:
        _arrays(arrays, manifest)
    except _Damaged as exc:
        raise _refuse(path, str(exc)) from None


# --- the manifest -------------------------------------------------------------------------------


def _need(ok: bool, problem: str) -> None:
    if not ok:
        raise _Damaged(problem)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _get(d: dict, key: str, where: str) -> object:
    _need(key in d, f"no {where}{key!r}")
    return d[key]


def _int(d: dict, key: str, where: str, lo: int) -> None:
    v = _get(d, key, where)
    _need(_is_int(v) and v >= lo, f"{where}{key!r} is {v!r}, expected an integer >= {lo}")


def _real(d: dict, key: str, where: str, lo: float, *, strict: bool = False) -> None:
    v = _get(d, key, where)
    ok = _is_real(v) and (v > lo if strict else v >= lo)
    _need(ok, f"{where}{key!r} is {v!r}, expected a finite number {'>' if strict else '>='} {lo:g}")


def _names(d: dict, key: str) -> int:
    v = _get(d, key, "")
    _need(isinstance(v, list) and all(isinstance(x, str) for x in v), f"{key!r} is not a list of strings")
    return len(v)


def _manifest(m: object) -> None:
    _need(isinstance(m, dict), "the manifest is not a JSON object")
    n_items = _names(m, "items")
    _names(m, "users")
    _names(m, "terms")
    for key in ("item_names", "item_artists"):
        _need(_names(m, key) == n_items, f"{key!r} has {len(m[key])} entries for {n_items} items")
    p = _get(m, "params", "")
    _need(isinstance(p, dict), "'params' is not an object")
    als = _get(p, "als", "params ")
    _need(isinstance(als, dict), "params 'als' is not an object")
    expected = {f.name for f in fields(ALSParams)}
    _need(set(als) == expected, f"params 'als' has keys {sorted(als)}, expected {sorted(expected)}")
    _int(als, "factors", "als ", 1)
    _int(als, "iterations", "als ", 1)
    _int(als, "seed", "als ", 0)
    _real(als, "regularization", "als ", 0.0)
    _real(als, "alpha", "als ", 0.0)
    _need(als["weighting"] in WEIGHTINGS, f"als 'weighting' is {als['weighting']!r}, expected one of {WEIGHTINGS}")
    _real(p, "ease_lambda", "params ", 0.0, strict=True)
    _int(p, "ease_min_listeners", "params ", 0)
    _int(p, "knn_k", "params ", 1)
    _real(p, "user_tag_weight", "params ", 0.0)
    _int(p, "seed", "params ", 0)
    for key in ("ann_min_items", "ann_candidates"):  # optional: models written before the ANN path
        if key in p:
            _int(p, key, "params ", 1)
    if "audio_term_weight" in p:  # optional: models written before the audio terms
        _real(p, "audio_term_weight", "params ", 0.0)
    w = _get(m, "weights", "")
    _need(isinstance(w, dict) and set(w) == set(SOURCES), f"'weights' must give exactly {', '.join(SOURCES)}")
    for key in SOURCES:
        _real(w, key, "weights ", 0.0)
    # fusion needs one source to fuse (fuse() raises on all-zero weights)
    _need(any(w[key] > 0 for key in SOURCES), "every fusion weight is 0")
    _need(isinstance(m.get("validation", {}), dict), "'validation' is not an object")


# --- the arrays ---------------------------------------------------------------------------------


def _array(arrays: dict, name: str, kind: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """The named array, of dtype kind 'f' (float) or 'i' (integer, signed or not), with the given
    shape (None: any length on that axis)."""
    _need(name in arrays, f"no array {name!r}")
    a = arrays[name]
    kinds = "iu" if kind == "i" else kind
    _need(a.dtype.kind in kinds, f"{name!r} is {a.dtype}, expected {'integers' if kind == 'i' else 'floats'}")
    ok = a.ndim == len(shape) and all(s is None or s == t for s, t in zip(shape, a.shape))
    want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
    _need(ok, f"{name!r} has shape {a.shape}, expected {want}")
    return a


def _within(a: np.ndarray, name: str, lo: float, hi: float) -> None:
    """Every value finite and in [lo, hi].  min and max first: they need no temporary the size of the
    array (EASE's is 1.3 GB on HetRec) and carry NaN through, which fails the comparison."""
    if a.size == 0 or (a.min() >= lo and a.max() <= hi):
        return
    bad = ~((a >= lo) & (a <= hi))
    if bad.any():
        raise _Damaged(f"{name!r} holds {int(bad.sum())} value(s) that are not finite or outside {lo:g}..{hi:g} "
                       f"(e.g. {float(a[bad].ravel()[0]):g})")


def _csr(arrays: dict, name: str, shape: tuple[int, int], lo: float, hi: float) -> None:
    """A CSR matrix saved as data / indices / indptr / shape: everything scipy would trust."""
    s = _array(arrays, f"{name}.shape", "i", (2,))
    _need(tuple(int(v) for v in s) == shape, f"{name!r} is {tuple(int(v) for v in s)}, expected {shape}")
    indptr = _array(arrays, f"{name}.indptr", "i", (shape[0] + 1,))
    indices = _array(arrays, f"{name}.indices", "i", (None,))
    data = _array(arrays, f"{name}.data", "f", (len(indices),))
    _need(int(indptr[0]) == 0 and int(indptr[-1]) == len(indices), f"{name!r}'s index pointer does not span its entries")
    # bounds before differences: np.diff of arbitrary int64 values can wrap around and look increasing
    _need(int(indptr.min()) >= 0 and int(indptr.max()) <= len(indices) and bool(np.all(np.diff(indptr) >= 0)),
          f"{name!r}'s index pointer is not increasing within 0..{len(indices)}")
    if len(indices):
        _need(int(indices.min()) >= 0 and int(indices.max()) < shape[1],
              f"{name!r} has column indices outside 0..{shape[1] - 1}")
    _within(data, f"{name}.data", lo, hi)


def _arrays(arrays: dict, m: dict) -> None:
    n_users, n_items, n_terms = len(m["users"]), len(m["items"]), len(m["terms"])
    k = m["params"]["als"]["factors"]
    for name, rows in (("als.user_factors", n_users), ("als.item_factors", n_items)):
        _within(_array(arrays, name, "f", (rows, k)), name, -MAX_FACTOR, MAX_FACTOR)
    # per-item exposure is standardized over the items: no z-score of n values exceeds sqrt(n - 1)
    bound = math.sqrt(max(n_items - 1, 0)) + 1e-3
    _within(_array(arrays, "exposure", "f", (n_items,)), "exposure", -bound, bound)
    _csr(arrays, "plays", (n_users, n_items), 0.0, MAX_VALUE)
    _csr(arrays, "user_tags", (n_users, n_items), 0.0, MAX_VALUE)
    _csr(arrays, "term_counts", (n_items, n_terms), 0.0, MAX_VALUE)
    if any(name.startswith("audio_term_counts.") for name in arrays):
        _csr(arrays, "audio_term_counts", (n_items, n_terms), 0.0, 1.0)  # the taggers' probabilities
    if "ease.B" in arrays or "ease.items" in arrays:
        cols = _array(arrays, "ease.items", "i", (None,))
        _within(_array(arrays, "ease.B", "f", (len(cols), len(cols))), "ease.B", -MAX_FACTOR, MAX_FACTOR)
        # the items EASE was fitted on: increasing, within the catalog (they index its score columns)
        _need(len(cols) == 0 or (int(cols.min()) >= 0 and int(cols.max()) < n_items and bool(np.all(np.diff(cols) > 0))),
              f"'ease.items' are not increasing item indices within 0..{n_items - 1}")
    if any(name.startswith("knn.sim.") for name in arrays):
        # cosine similarities: -1..1, with room for rounding
        _csr(arrays, "knn.sim", (n_items, n_items), -1.0 - 1e-3, 1.0 + 1e-3)
    if "audio.features" in arrays or "audio.present" in arrays:
        f = _array(arrays, "audio.features", "f", (n_items, None))
        _need(f.shape[1] >= 1, "'audio.features' has no columns")
        _within(f, "audio.features", -np.finfo(np.float32).max, np.finfo(np.float32).max)
        present = _array(arrays, "audio.present", "i", (n_items,))
        _need(bool(np.all((present == 0) | (present == 1))), "'audio.present' is not 0 / 1")
