"""The tagging stage: musicnn's two taggers on one shared mel spectrogram, and the `terms` they give.

Both taggers (MagnaTagATune and MSD, ``analyzer.stages.musicnn``) read the same 16 kHz log-mel
spectrogram, so it is computed once from the analyzer's decoded samples.  The stage owns the
document's ``terms`` extension: each tagger's strongest tags, Echo Nest artist-terms style
(``frequency`` the tagger's mean probability, ``weight`` relative to the strongest term), and
the MSD tagger's penultimate layer as the track's default ``embedding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.stages import musicnn
from analyzer.errors import ParameterError

# the embedding's id in the document (``embedding_model``): which layer of which tagger
EMBEDDING_MODEL = "musicnn-msd-penultimate-1"


@dataclass(frozen=True)
class TagParams:
    """How many of each tagger's strongest tags become terms; how many 3 s patches the taggers read."""

    terms_per_tagger: int = 5
    # Each 3 s patch costs ~2.3 GFLOP per tagger (the 7 x 38 and 7 x 67 timbral convolutions), ~40 ms on
    # one core, about what the rest of the analysis spends on 15 s of audio: so a track is read through
    # one patch per this many seconds (2 of a 30 s clip, 14 of a 3.5-minute song, at least 1), at the
    # centres of equal parts of it (no intro or outro patch), and the taggers' share of the analysis is
    # the same on every length.  bench.tag_patches: on GTZAN's two folds, 2 of 10 patches kept
    # zero-shot genre and the embedding's precision@5 within their noise (r 0.95-0.97 with all
    # patches' tag probabilities) at 12.6 % of the analysis (issue 19's limit: 15 %); 10 took 39 %.
    seconds_per_patch: float = 15.0


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
    """The log-mel spectrogram a tagger reads: the 3 s patches ``patch_indices`` chooses (one per
    ``params.seconds_per_patch``), joined back into (frames, n_mels); only their frames are computed.

    Parameters
    ----------
    samples : np.ndarray
        Mono samples.
    sr : int
        Their rate, Hz (resampled to the front end's 16 kHz).
    front : musicnn.FrontEnd
        The taggers' front end.
    params : TagParams

    Returns
    -------
    np.ndarray
        (frames, n_mels) float32; fewer frames than one patch where the input is shorter than 3 s.
    """
    y = musicnn.at_front_rate(samples, sr, front)
    chosen = patch_indices(musicnn.frame_count(len(y), front) // front.patch_frames,
                           len(y) / front.sample_rate, params.seconds_per_patch)
    # the chosen patches' frames only: the same values as the whole spectrogram's
    frames = (chosen[:, None] * front.patch_frames + np.arange(front.patch_frames)).reshape(-1)
    return musicnn.log_mel(y, front.sample_rate, front, frames=frames)


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


def patch_indices(n_patches: int, duration_s: float, seconds_per_patch: float) -> np.ndarray:
    """Which of a track's whole patches the taggers read.

    Parameters
    ----------
    n_patches : int
        The track's whole 3 s patches.
    duration_s : float
        Its length.
    seconds_per_patch : float
        One patch per this many seconds (rounded, at least one; all where that is more).

    Returns
    -------
    numpy.ndarray of int
        Increasing patch indices: the centres of equal parts of the track.
    """
    if seconds_per_patch <= 0:
        raise ParameterError(f"seconds_per_patch must be positive, got {seconds_per_patch}")
    if n_patches <= 0:
        return np.zeros(0, dtype=np.int64)
    return centred_patches(n_patches, min(n_patches, max(1, int(np.floor(duration_s / seconds_per_patch + 0.5)))))


def centred_patches(n_patches: int, k: int) -> np.ndarray:
    """The indices of ``k`` of ``n_patches`` patches (1 <= k <= n_patches): the centres of k equal parts."""
    return np.floor((np.arange(k) + 0.5) * n_patches / k).astype(np.int64)


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
