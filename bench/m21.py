"""Audio rendered from the music21 score corpus with FluidSynth, cached in bench/.cache/m21.

Pieces that are not in the eval corpus: the identification bench uses them as songs that are
not in the catalog.  Needs music21 (the `bench` extra), fluidsynth and the GM soundfont.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

CACHE = Path(__file__).resolve().parent / ".cache" / "m21"
SR = 22050

# not the five scores in ../shared/eval/renders (bwv269, bwv66.6, Maple Leaf Rag, K155, op41/1), and
# none of the held-out works (bench/corpus.py: the six that were here are replaced by other works)
NEGATIVE_PIECES = (
    "bach/bwv10.7", "bach/bwv101.7", "bach/bwv102.7", "bach/bwv103.6", "bach/bwv104.6", "bach/bwv108.6",
    "beethoven/opus59no1", "beethoven/opus59no2", "mozart/k80", "mozart/k156",
    "beach/prayer_of_a_tired_child", "schumann_robert/dichterliebe_no2", "monteverdi/madrigal.3.2",
    "monteverdi/madrigal.4.1", "schumann_clara/opus17", "liliuokalani/aloha_oe", "haydn/opus74no1",
    "beethoven/opus18no3", "josquin/milleRegrets", "verdi/laDonnaEMobile", "weber/concertino_clarinet",
)


def render(piece: str, *, max_s: float = 90.0) -> Path:
    """The piece's first `max_s` seconds as a mono FLAC (rendered once, then read from the cache)."""
    from .corpus import is_heldout

    if is_heldout(piece):
        raise ValueError(f"{piece} is a held-out work (bench/corpus.py): it is never rendered")
    out = CACHE / (piece.replace("/", "__") + ".flac")
    if out.is_file():
        return out
    from music21 import corpus

    from fixtures.synth import render_midi

    CACHE.mkdir(parents=True, exist_ok=True)
    score = corpus.parse(piece)
    if hasattr(score, "scores"):  # an Opus: its first score
        score = score.scores[0]
    # whole multi-movement works are long to render (and one made FluidSynth spin): the opening bars
    score = score.measures(0, 40)
    midi = out.with_suffix(".mid")
    score.write("midi", fp=str(midi))
    x = render_midi(midi, sr=SR).mean(axis=1)
    write_render(x[: int(max_s * SR)], out)
    midi.unlink(missing_ok=True)
    return out


def write_render(x: np.ndarray, out: Path) -> None:
    """Write rendered audio at `SR` as FLAC, peak-normalised to 0.7, atomically (a temporary file, then renamed).

    Parameters
    ----------
    x : np.ndarray
        Samples, (n,) or (n, channels).
    out : Path
        The FLAC to write.
    """
    x = x / (np.max(np.abs(x)) + 1e-9) * 0.7
    tmp = out.with_suffix(".tmp.flac")
    sf.write(tmp, x.astype(np.float32), SR)
    tmp.replace(out)


def render_all(pieces=NEGATIVE_PIECES) -> list[Path]:
    """Every piece that renders; a piece music21 or FluidSynth cannot handle is skipped with a note."""
    from .corpus import usable

    paths = []
    for p in usable(pieces):
        try:
            paths.append(render(p))
        except Exception as exc:  # noqa: BLE001 - a corpus entry that will not parse: skip it, say so
            print(f"bench: m21 {p}: skipped ({type(exc).__name__}: {exc})")
    return paths
