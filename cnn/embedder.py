"""The audio CNN, or a factor head on musicnn, as the analyzer's embedder (registered as ``cnn`` in
pyproject.toml's entry points).  `load` tells the two file formats apart by their manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from analyzer.errors import InputError


class CNNEmbedder:
    """An `analyzer.embedding.Embedder`: the model's mean window embedding of a track."""

    def __init__(self, model, model_id: str, device: str) -> None:
        self.model, self.model_id, self.device = model, model_id, device

    def embed(self, samples: np.ndarray, sr: int) -> np.ndarray:
        from .train import embed

        if sr != self.model.cfg.sr:
            raise InputError(f"the audio CNN reads {self.model.cfg.sr} Hz audio, got {sr} Hz")
        return embed(self.model, samples, device=self.device)


class MusicnnHeadEmbedder:
    """An `analyzer.embedding.TagsEmbedder`: a head trained by ``cnn train --base musicnn`` on the MSD
    tagger.  Given the analysis' tagger output it runs only the head (milliseconds); given samples it
    runs the MSD tagger first, as the analysis does (same patches, one BLAS thread)."""

    def __init__(self, model, model_id: str) -> None:
        from analyzer.stages.musicnn import load_tagger

        self.model, self.model_id = model, model_id
        self.tagger = load_tagger("msd")

    def embed_tags(self, tags) -> np.ndarray | None:
        """The head's embedding from ``tags.msd``; None where the tagger did not run (under 3 s)."""
        from .musicnn_head import features, predict

        x = features(tags.msd, self.model.cfg.base)
        return None if x is None else predict(self.model, [x])[0][0]

    def embed(self, samples: np.ndarray, sr: int) -> np.ndarray:
        from analyzer.stages.tagging import Tags

        from .musicnn_head import tagger_output

        v = self.embed_tags(Tags(mtt=None, msd=tagger_output(samples, sr, tagger=self.tagger)))
        if v is None:
            min_s = self.tagger.front.min_samples / self.tagger.front.sample_rate
            raise InputError(f"the musicnn head needs at least {min_s:.2f} s of audio (one tagger patch)")
        return v


def model_id(path: Path) -> str:
    """The id documents carry: the file's name and the start of its SHA-1 (changes with the weights)."""
    return f"{Path(path).name} {hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]}"


def _format(path: Path) -> str | None:
    """The manifest's format, or None where the file has none (load_model then says what is wrong)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return json.loads((f.metadata() or {})["manifest"]).get("format")
    except Exception:  # noqa: BLE001 - unreadable, no manifest, not JSON: the CNN loader's message says which
        return None


def load(path: Path, *, device: str = "cpu", threads: int | None = None) -> CNNEmbedder | MusicnnHeadEmbedder:
    """Load the model at ``path``: the log-mel CNN on ``device``, or a musicnn head (CPU: the tagger is numpy).

    Parameters
    ----------
    path : Path
        A safetensors file written by ``cnn train``.
    device : str
        cpu, or cuda where a GPU exists (the CNN only).
    threads : int, optional
        torch's CPU threads (1 in a batch worker).

    Returns
    -------
    CNNEmbedder or MusicnnHeadEmbedder

    Raises
    ------
    InputError
        No such device, or a file that is not one of these models (one line).
    """
    import torch

    from . import musicnn_head
    from .model import load as load_model

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device on this machine")
    if threads is not None:
        torch.set_num_threads(threads)  # one worker per core already
    if _format(path) == musicnn_head.FORMAT:
        model, _ = musicnn_head.load(path)
        return MusicnnHeadEmbedder(model, model_id(path))
    model, _ = load_model(path, device=device)
    return CNNEmbedder(model, model_id(path), device)
