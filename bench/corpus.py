"""The music21 score corpus as a source of development audio, minus the held-out works.

Ten corpus works (nine prefixes) are the renders of the held-out evaluation half: no script may
render, tune on or test with them.  Every script that samples the corpus goes through
`usable` / `corpus_paths`, and `tests/test_corpus_heldout.py` checks each sampler.
"""

from __future__ import annotations

from pathlib import Path

# corpus-relative paths (no extension); a work is held out when its path starts with one of these
HELDOUT_PREFIXES = (
    "bach/bwv1.6",
    "beethoven/opus18no1",
    "chopin/mazurka06-2",
    "corelli/opus3no1",
    "cpebach/h186",
    "handel/rinaldo",
    "haydn/opus1no1",
    "monteverdi/madrigal.3.1",
    "schubert/Lindenbaum",
)


def corpus_relative(path: str | Path) -> str:
    """'bach/bwv1.6.mxl' from '/.../music21/corpus/bach/bwv1.6.mxl'; a relative name is returned as it is."""
    text = str(path).replace("\\", "/")
    marker = "/corpus/"
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.lstrip("/")


def is_heldout(path: str | Path) -> bool:
    """True for any corpus path or piece name under a held-out prefix (plain prefix match: errs on excluding)."""
    rel = corpus_relative(path)
    return any(rel.startswith(prefix) for prefix in HELDOUT_PREFIXES)


def usable(paths):
    """The paths (or piece names) that are not held out, in their order."""
    return [p for p in paths if not is_heldout(p)]


def corpus_paths(composer: str) -> list[str]:
    """Sorted corpus files of one composer, the held-out works removed."""
    from music21 import corpus

    return usable(sorted(str(p) for p in corpus.getComposer(composer)))
