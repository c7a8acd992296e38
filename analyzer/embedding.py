"""What the analyzer needs from an embedding model, and how it finds one without importing it.

A model package (``cnn/`` here; a tagger later) implements `Embedder` and registers a
loader under the entry-point group ``echonest_analyzer.embedders`` (see pyproject.toml:
``cnn = "cnn.embedder:load"``).  ``analyze --model FILE`` names the file and
``--embedder NAME`` the loader (default ``cnn``); ``NAME`` may also be a
``module:function`` path, for a loader that is not installed as a package.  So the
analyzer depends on no model package (nor on torch): the dependency points from the
model package to the analyzer, never back.

A model built on the analysis' own musicnn tagger (``cnn train --base musicnn``) also
implements `TagsEmbedder`: the analysis hands it the tagger's output, so the tagger runs
once per track, not once for the document and again for the embedding.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

from analyzer.errors import InputError, quote_path

if TYPE_CHECKING:
    from analyzer.stages.tagging import Tags

ENTRY_POINT_GROUP = "echonest_analyzer.embedders"
DEFAULT_EMBEDDER = "cnn"


@runtime_checkable
class Embedder(Protocol):
    """A model that turns a track's samples into one vector.

    ``model_id`` goes into the document as ``embedding_model`` and decides whether an
    existing output is up to date, so it must change whenever the weights do.
    """

    model_id: str

    def embed(self, samples: np.ndarray, sr: int) -> np.ndarray:
        """The track's embedding, a 1-D float vector."""
        ...


@runtime_checkable
class TagsEmbedder(Embedder, Protocol):
    """An `Embedder` that reads the analysis' tagging output (``analyzer.stages.tagging.Tags``) instead of
    running the tagger on the samples again; ``embed`` stays for callers that have only samples."""

    def embed_tags(self, tags: Tags) -> np.ndarray | None:
        """The track's embedding from the taggers' outputs; None where the tagger did not read it
        (shorter than one 3 s patch), as the default embedding is then absent too."""
        ...


def embed_analysis(embedder: Embedder, samples: np.ndarray, sr: int, tags: Tags) -> np.ndarray | None:
    """The embedder's vector for an analysed track: from ``tags`` where it reads them, else from the samples.

    Parameters
    ----------
    embedder : Embedder
    samples : np.ndarray
        The decoded mono samples the analysis read.
    sr : int
        Their rate, Hz.
    tags : Tags
        The analysis' tagging output.

    Returns
    -------
    np.ndarray or None
        1-D float32; None where a `TagsEmbedder` has nothing to read.
    """
    v = embedder.embed_tags(tags) if isinstance(embedder, TagsEmbedder) else embedder.embed(samples, sr)
    return None if v is None else np.asarray(v, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything a worker process needs to build the embedder (picklable)."""

    path: Path
    kind: str = DEFAULT_EMBEDDER
    device: str = "cpu"


# a loader: (model file, device, threads or None for the library's default) -> Embedder
Loader = Callable[..., Embedder]

def find_loader(kind: str) -> Loader:
    """The loader registered under ``kind``, or the ``module:function`` it names; InputError if none."""
    from importlib.metadata import entry_points

    if ":" in kind:
        module, _, name = kind.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"--embedder {kind}: cannot load it ({type(exc).__name__}: {exc})") from None
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == kind]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        hint = " (pip install 'echonest-analyzer[cnn]')" if kind == DEFAULT_EMBEDDER else ""
        raise InputError(f"--embedder {kind}: no such embedder is installed{hint}; installed: {known or 'none'}")
    try:
        return found[0].load()
    except ImportError as exc:  # registered, but its package's own dependencies are missing (torch)
        raise InputError(f"--embedder {kind}: installed but cannot be imported ({exc}); "
                         "pip install 'echonest-analyzer[cnn]'") from None


def load_embedder(spec: EmbedderSpec, *, threads: int | None = None) -> Embedder:
    """Load the embedder ``spec`` names (the caller keeps it: `batch.Resources` loads it once per process)."""
    if not Path(spec.path).is_file():
        raise InputError(f"--model {quote_path(Path(spec.path))}: no such file")
    embedder = find_loader(spec.kind)(Path(spec.path), device=spec.device, threads=threads)
    if not isinstance(embedder, Embedder):
        raise InputError(f"--embedder {spec.kind}: its loader returned {type(embedder).__name__}, not an embedder")
    return embedder
