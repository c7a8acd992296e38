"""The tagging stage: musicnn's two taggers on one shared mel spectrogram, and the `terms` they give.

Both taggers (MagnaTagATune and MSD, ``analyzer.musicnn``) read the same 16 kHz log-mel
spectrogram, so it is computed once from the analyzer's decoded samples.  The stage owns the
document's ``terms`` extension: each tagger's strongest tags, Echo Nest artist-terms style
(``frequency`` the tagger's mean probability, ``weight`` relative to the strongest term), and
the MSD tagger's penultimate layer as the track's default ``embedding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import musicnn
from .errors import ParameterError

# the embedding's id in the document (``embedding_model``): which layer of which tagger
EMBEDDING_MODEL = "musicnn-msd-penultimate-1"


@dataclass(frozen=True)
class TagParams:
    """How many of each tagger's strongest tags become terms; how many 3 s patches the taggers read."""

    terms_per_tagger: int = 5
    # Each patch costs ~2.3 GFLOP per tagger (the 7 x 38 and 7 x 67 timbral convolutions), ~50 ms on one
    # core: a track is read through at most this many patches, evenly spread, so the cost is bounded per
    # track (all of a 30 s clip; one patch in seven of a 3.5-minute song)
    max_patches: int = 10


@dataclass(frozen=True)
class Term:
    name: str
    frequency: float  # the tagger's mean probability, 0..1
    weight: float  # frequency relative to the strongest term's, 0..1
    tagger: str  # "mtt" or "msd"


@dataclass(frozen=True)
class Tags:
    """Both taggers' outputs; None for a tagger that could not read the input (shorter than 3 s)."""

    mtt: musicnn.TaggerOutput | None
    msd: musicnn.TaggerOutput | None
    terms: tuple[Term, ...] = ()  # each tagger's strongest tags (``top_terms``)

    def probabilities(self, tagger: str) -> dict[str, float] | None:
        """Tag name -> mean probability for one tagger ("mtt" or "msd"), None where it did not run."""
        out = getattr(self, tagger)
        return None if out is None else {t: float(p) for t, p in zip(out.tags, out.probabilities)}

    def embedding(self) -> np.ndarray | None:
        """The MSD tagger's penultimate layer, averaged over patches and L2-normalised (200,)."""
        if self.msd is None:
            return None
        v = np.asarray(self.msd.embedding, dtype=np.float64)
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 0 else None


def tag(samples: np.ndarray, sr: int, *, mtt: musicnn.Tagger, msd: musicnn.Tagger,
        params: TagParams = TagParams()) -> Tags:
    """Run both taggers on one mel spectrogram of the samples.

    Parameters
    ----------
    samples : np.ndarray
        Mono samples.
    sr : int
        Their rate, Hz.
    mtt, msd : musicnn.Tagger
        The loaded taggers (``musicnn.load_tagger``); they share a front end.
    params : TagParams

    Returns
    -------
    Tags
        Both outputs and the terms, or None each (and no terms) where the input is shorter than
        one 3 s patch.
    """
    if mtt.front != msd.front:
        raise ParameterError("the two taggers read different spectrograms; tag them separately")
    spec = read_patches(samples, sr, front=mtt.front, params=params)
    a, b = run_tagger(mtt, spec), run_tagger(msd, spec)
    if a is None or b is None:  # shorter than one patch: the taggers have nothing to say
        return Tags(mtt=None, msd=None)
    return Tags(mtt=a, msd=b, terms=top_terms({"mtt": a, "msd": b}, params))


def read_patches(samples: np.ndarray, sr: int, *, front: musicnn.FrontEnd, params: TagParams = TagParams()) -> np.ndarray:
    """The log-mel spectrogram a tagger reads: its whole 3 s patches, at most ``params.max_patches``
    of them evenly spread, joined back into (frames, n_mels).

    Parameters
    ----------
    samples : np.ndarray
        Mono samples.
    sr : int
        Their rate, Hz (resampled to the front end's 16 kHz by ``musicnn.log_mel``).
    front : musicnn.FrontEnd
        The taggers' front end.
    params : TagParams

    Returns
    -------
    np.ndarray
        (frames, n_mels) float32; fewer frames than one patch where the input is shorter than 3 s.
    """
    return _spread_patches(musicnn.log_mel(samples, sr, front), front.patch_frames, params.max_patches)


def run_tagger(tagger: musicnn.Tagger, spec: np.ndarray) -> musicnn.TaggerOutput | None:
    """One tagger on ``read_patches``'s spectrogram, as the analysis runs it; None where it is shorter than a patch."""
    from threadpoolctl import threadpool_limits

    try:
        # one BLAS thread: a matrix product's sums are then the same in every process (a batch worker,
        # a Spark executor, the CLI), so the same audio gives the same document byte for byte
        with threadpool_limits(limits=1, user_api="blas"):
            return musicnn.predict_spectrogram(tagger, spec)
    except ParameterError:
        return None


def _spread_patches(spec: np.ndarray, patch_frames: int, max_patches: int) -> np.ndarray:
    """The spectrogram's whole patches, or ``max_patches`` of them evenly spread, joined back into frames."""
    n = len(spec) // patch_frames
    if n <= max_patches:
        return spec
    chosen = np.unique(np.round(np.linspace(0, n - 1, max_patches)).astype(int))
    return spec[: n * patch_frames].reshape(n, patch_frames, -1)[chosen].reshape(-1, spec.shape[1])


def top_terms(outputs: dict[str, musicnn.TaggerOutput], params: TagParams = TagParams()) -> tuple[Term, ...]:
    """Each tagger's strongest tags as terms, strongest first; a tag both name keeps its larger probability."""
    best: dict[str, tuple[float, str]] = {}
    for name, out in outputs.items():
        for t, p in out.top(params.terms_per_tagger):
            key = " ".join(t.lower().split())
            if key not in best or p > best[key][0]:
                best[key] = (p, name)
    if not best:
        return ()
    top = max(p for p, _ in best.values())
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return tuple(Term(name=k, frequency=p, weight=p / top if top > 0 else 0.0, tagger=src) for k, (p, src) in ranked)
