"""The audio CNN as the analyzer's embedder (registered as ``cnn`` in pyproject.toml's entry points)."""

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


def model_id(path: Path) -> str:
    """The id documents carry: the file's name and the start of its SHA-1 (changes with the weights)."""
    return f"{Path(path).name} {hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]}"


def load(path: Path, *, device: str = "cpu", threads: int | None = None) -> CNNEmbedder:
    """Load the CNN at ``path`` on ``device``; ``threads``: torch's CPU threads (1 in a batch worker)."""
    import torch

    from .model import load as load_model

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device on this machine")
    if threads is not None:
        torch.set_num_threads(threads)  # one worker per core already
    model, _ = load_model(path, device=device)
    return CNNEmbedder(model, model_id(path), device)
