"""Saving and loading a fitted recommender: safetensors arrays and a JSON manifest, nothing pickled.

    FOLDER/arrays.safetensors   factors, sparse matrices (data/indices/indptr/shape), exposure
    FOLDER/manifest.json        format, ids, names, terms, settings, fusion weights, validation

Everything read is checked by `recommender.integrity` before a model is built from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from analyzer.errors import InputError

from .dataset import Dataset
from .fit import build_ann
from .fusion import FusionWeights
from .integrity import check_arrays, check_manifest
from .model import FitParams, Recommender
from .models import ALS, ALSParams, EASE, AudioVectors, ItemKNN, TermVectors

MODEL_FORMAT = 2  # 2: per-item exposure


def save(rec: Recommender, folder) -> None:
    """Write a fitted model into a folder.

    Parameters
    ----------
    rec : Recommender
        The model; its exposure must be computed.
    folder : str or path-like
        An existing folder: arrays.safetensors and manifest.json are written into it (the store
        publishes the folder only once both are complete).

    Notes
    -----
    Term and audio vectors are not saved: `load` refits them from the saved counts and features
    (deterministic, and cheaper than storing a second copy).
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    d = rec.data
    arrays: dict[str, np.ndarray] = {
        "als.user_factors": rec.als.user_factors, "als.item_factors": rec.als.item_factors,
        "exposure": rec.exposure,
    }
    _put_csr(arrays, "plays", d.plays)
    _put_csr(arrays, "user_tags", d.user_tags)
    _put_csr(arrays, "term_counts", d.term_counts)
    if rec.ease is not None:
        arrays["ease.B"], arrays["ease.items"] = rec.ease.B, rec.ease.items.astype(np.int64)
    if rec.knn is not None:
        _put_csr(arrays, "knn.sim", rec.knn.sim)
    if d.audio_term_counts is not None:
        _put_csr(arrays, "audio_term_counts", d.audio_term_counts)
    if d.audio is not None:
        arrays["audio.features"], arrays["audio.present"] = d.audio, d.audio_present.astype(np.uint8)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "arrays.safetensors"))
    manifest = {
        "format": MODEL_FORMAT,
        "users": d.users, "items": d.items, "item_names": d.item_names, "item_artists": d.item_artists, "terms": d.terms,
        "params": {"als": rec.params.als.__dict__, "ease_lambda": rec.params.ease_lambda,
                   "ease_min_listeners": rec.params.ease_min_listeners, "knn_k": rec.params.knn_k,
                   "user_tag_weight": rec.params.user_tag_weight, "audio_term_weight": rec.params.audio_term_weight,
                   "seed": rec.params.seed,
                   "ann_min_items": rec.params.ann_min_items, "ann_candidates": rec.params.ann_candidates},
        "weights": rec.weights.as_dict(),
        "validation": rec.validation,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def load(folder) -> Recommender:
    """Read a model that `save` wrote.

    Parameters
    ----------
    folder : str or path-like
        The model version's folder.

    Returns
    -------
    Recommender
        With its ANN index rebuilt where the catalog is large enough.

    Raises
    ------
    analyzer.errors.InputError
        The files are missing, unreadable, of another format version, or do not make a whole
        model (the message names the file and says to refit).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        arrays = load_file(str(folder / "arrays.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"{folder}: cannot read the model ({exc}); refit") from None
    if isinstance(manifest, dict) and manifest.get("format") != MODEL_FORMAT:
        raise InputError(f"{folder}: model format {manifest.get('format')}, this recommend reads {MODEL_FORMAT}; refit")
    # nothing is built from the files before they are known to make a whole model (scipy trusts
    # sparse indices: an out-of-range one crashed the process)
    check_manifest(manifest, folder / "manifest.json")
    check_arrays(arrays, manifest, folder / "arrays.safetensors")
    data = _dataset(manifest, arrays)
    p = manifest["params"]
    params = FitParams(als=ALSParams(**p["als"]), ease_lambda=p["ease_lambda"], ease_min_listeners=p["ease_min_listeners"],
                       knn_k=p["knn_k"], user_tag_weight=p["user_tag_weight"], seed=p["seed"],
                       audio_term_weight=p.get("audio_term_weight", 1.0),
                       ann_min_items=p.get("ann_min_items", 100_000), ann_candidates=p.get("ann_candidates", 1000))
    weights = FusionWeights(**manifest["weights"])
    als = ALS.from_factors(arrays["als.user_factors"], arrays["als.item_factors"], params.als)
    ease = None
    if "ease.B" in arrays:
        ease = EASE(params.ease_lambda, params.ease_min_listeners)
        ease.B, ease.items, ease.n_items = arrays["ease.B"], arrays["ease.items"], data.plays.shape[1]
    knn = None
    if "knn.sim.data" in arrays:
        knn = ItemKNN(params.knn_k)
        knn.sim = _get_csr(arrays, "knn.sim")
    terms = None
    if weights.terms and (data.term_counts.nnz or (data.audio_term_counts is not None and data.audio_term_counts.nnz)):
        terms = TermVectors().fit(data.term_counts, data.audio_term_counts, params.audio_term_weight)
    audio = AudioVectors().fit(data.audio, data.audio_present) if data.audio is not None and weights.audio else None
    rec = Recommender(data, params, als, ease, knn, terms, audio, weights, manifest.get("validation", {}),
                      exposure=arrays["exposure"])
    if data.plays.shape[1] >= params.ann_min_items:
        # rebuilt from the factors (single-threaded: the same graph every time) rather than stored in a
        # second file format
        rec.ann = build_ann(als.item_factors)
    return rec


def _dataset(manifest: dict, arrays: dict) -> Dataset:
    has_audio = "audio.features" in arrays
    return Dataset(
        manifest["users"], manifest["items"], manifest["item_names"], manifest["item_artists"],
        _get_csr(arrays, "plays"), manifest["terms"], _get_csr(arrays, "term_counts"), _get_csr(arrays, "user_tags"),
        arrays["audio.features"] if has_audio else None,
        arrays["audio.present"].astype(bool) if has_audio else None,
        _get_csr(arrays, "audio_term_counts") if "audio_term_counts.data" in arrays else None,
    )


def _put_csr(arrays: dict, name: str, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    arrays[f"{name}.data"] = np.ascontiguousarray(m.data, dtype=np.float32)
    arrays[f"{name}.indices"] = np.ascontiguousarray(m.indices, dtype=np.int64)
    arrays[f"{name}.indptr"] = np.ascontiguousarray(m.indptr, dtype=np.int64)
    arrays[f"{name}.shape"] = np.array(m.shape, dtype=np.int64)


def _get_csr(arrays: dict, name: str) -> sp.csr_matrix:
    shape = tuple(int(v) for v in arrays[f"{name}.shape"])
    return sp.csr_matrix((arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]), shape=shape)
