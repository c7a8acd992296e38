"""Development renders for rhythm: music21 scores with exact beats, downbeats and meter (issue 16).

The five renders in ``../shared/eval/renders`` are too few to tune the meter and downbeat decoder on,
and the held-out half showed that choices fitted to them did not carry over.  This module renders
more scores the same way those were made (music21's MIDI, one tempo, velocity as music21 writes it,
FluidSynth with the FluidR3 GM soundfont, 22050 Hz stereo) and writes truth in the same layout
(``NAME.truth.json``: ``beats``, ``downbeats``, ``time_signature``, ``tempo_bpm_quarter``; the MIDI beside
it), so ``bench.truth`` reads them like the eval renders.

    python -m bench.devrenders            # render what is missing into bench/.cache/devrenders

Every work is read through ``bench.corpus.corpus_paths`` (held-out works removed) and checked with
``is_heldout`` again before rendering.  Each piece gets a tempo, a length (60-90 s, whole bars) and an
instrumentation drawn from a generator seeded by its name, so the set is the same on every machine.
Beats follow the benchmark's convention (``bench.truth.meter_from_signature``): the denominator's note,
or the dotted quarter in 6/8, 9/8 and 12/8; 3/8 counts three eighths.
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import corpus_paths, corpus_relative, is_heldout
from .m21 import SR, write_render
from .truth import bench_cache_dir, meter_from_signature

TAIL_S = 2.0  # release and reverb after the last bar, as the eval renders have
MIN_S, MAX_S = 60.0, 90.0

# (corpus work, time signature it is expected to keep over its first 90 s).  None of the five eval
# renders (bwv269, bwv66.6, Maple Leaf Rag, K155/1, op41/1/2) and none of the held-out works.
PIECES: tuple[tuple[str, str], ...] = (
    ("beethoven/opus59no1/movement1", "4/4"),
    ("beethoven/opus59no2/movement2", "4/4"),
    ("mozart/k156/movement2", "4/4"),
    ("mozart/k458/movement3", "4/4"),
    ("mozart/k80/movement2", "4/4"),
    ("haydn/opus74no1/movement1", "4/4"),
    ("beach/prayer_of_a_tired_child", "4/4"),
    ("monteverdi/madrigal.4.12", "4/4"),
    ("bach/bwv846", "4/4"),
    ("bach/bwv10.7", "4/4"),
    ("bach/bwv227.3", "4/4"),
    ("bach/bwv40.6", "4/4"),
    ("beethoven/opus59no2/movement3", "3/4"),
    ("beethoven/opus59no3/movement3", "3/4"),
    ("mozart/k155/movement2", "3/4"),
    ("mozart/k156/movement3", "3/4"),
    ("mozart/k458/movement2", "3/4"),
    ("mozart/k80/movement1", "3/4"),
    ("haydn/opus74no1/movement3", "3/4"),
    ("schumann_clara/polonaise_op1n1", "3/4"),
    ("schumann_clara/polonaise_op1n3", "3/4"),
    ("bach/bwv248.42-4", "3/4"),
    ("schumann_clara/polonaise_op1n2", "3/4"),
    ("trecento/PMFC_04-Cara mi donna", "3/4"),
    ("beethoven/opus59no1/movement4", "2/4"),
    ("mozart/k155/movement3", "2/4"),
    ("mozart/k458/movement4", "2/4"),
    ("haydn/opus74no1/movement4", "2/4"),
    ("trecento/PMFC_13_14-Gloria", "2/4"),
    ("trecento/PMFC_06_Piero_2-Chavalcando", "2/4"),
    ("trecento/PMFC_13_01-Kyrie-Summe-Clementissime", "2/4"),
    ("beethoven/opus59no2/movement1", "6/8"),
    ("beethoven/opus59no3/movement2", "6/8"),
    ("mozart/k458/movement1", "6/8"),
    ("schumann_clara/opus17/movement3", "6/8"),
    ("johnson_j_r/lift_every_voice", "6/8"),
    ("trecento/Fava_Dicant_nunc_iudei", "6/8"),
    ("trecento/PMFC_12_17-Sanctus Gratiosus", "6/8"),
    ("beethoven/opus59no1/movement2", "3/8"),
    ("mozart/k156/movement1", "3/8"),
    ("haydn/opus74no1/movement2", "3/8"),
    ("beethoven/opus59no2/movement4", "2/2"),
    ("beethoven/opus59no3/movement4", "2/2"),
)

# beat tempo range (BPM of the counted beat) by time signature: where each is commonly played
BEAT_BPM = {"4/4": (60, 132), "3/4": (72, 160), "2/4": (60, 120), "6/8": (48, 96), "3/8": (96, 160), "2/2": (56, 96)}

# General MIDI programs, one list per instrumentation; parts take them in order (cycling).  "score"
# keeps the programs music21 writes for the score's own instruments, as the eval renders did.
INSTRUMENTATIONS: dict[str, tuple[int, ...]] = {
    "score": (),
    "piano": (0,),
    "strings": (40, 40, 41, 42, 43),
    "string_ensemble": (48,),
    "organ": (19,),
    "choir": (52,),
    "winds": (73, 68, 71, 70, 60),
    "harpsichord": (6,),
    "guitar": (24,),
}


@dataclass(frozen=True)
class Plan:
    """How one piece is rendered: all drawn from a generator seeded by the piece's name."""

    piece: str
    signature: str
    beat_bpm: float
    target_s: float
    instrumentation: str

    @property
    def name(self) -> str:
        """The file name stem: the work's corpus path with '/' and spaces replaced."""
        return self.piece.replace("/", "__").replace(" ", "_")


def plan(piece: str, signature: str) -> Plan:
    """The piece's tempo, length and instrumentation (deterministic)."""
    rng = np.random.default_rng(zlib.crc32(piece.encode("utf-8")))
    lo, hi = BEAT_BPM[signature]
    return Plan(
        piece=piece,
        signature=signature,
        beat_bpm=float(round(rng.uniform(lo, hi))),
        target_s=float(rng.uniform(MIN_S, MAX_S)),
        instrumentation=str(rng.choice(list(INSTRUMENTATIONS))),
    )


def beat_quarters(signature: str) -> float:
    """Length of the counted beat in quarter notes (bench convention: 6/8 -> dotted quarter, 3/8 -> eighth)."""
    num, den = (int(x) for x in signature.split("/"))
    if den == 8 and num > 3 and num % 3 == 0:
        return 1.5
    return 4.0 / den


def bar_grid(measures: list[tuple[float, float, float, str]], *, until_ql: float) -> tuple[list[float], list[float]]:
    """Beat and downbeat positions (quarter notes) of consecutive measures, up to `until_ql`.

    `measures`: (offset, duration, padding on the left, time signature) per measure.  A measure
    shorter than its bar with left padding is an anacrusis: its beats are counted back from its end
    and it has no downbeat.  Any other measure starts with a downbeat (a short one, such as the bar
    that closes a repeat, simply ends early).
    """
    beats, downbeats = [], []
    for offset, dur, pad_left, sig in measures:
        if offset >= until_ql - 1e-6:
            break
        num, den = (int(x) for x in sig.split("/"))
        bar = num * 4.0 / den
        step = beat_quarters(sig)
        positions = np.arange(0.0, bar - 1e-6, step)
        if pad_left > 1e-6 and dur < bar - 1e-6:
            missing = bar - dur
            inside = positions[positions >= missing - 1e-6] - missing
        else:
            inside = positions[positions < dur - 1e-6]
            downbeats.append(offset)
        beats.extend(float(offset + p) for p in inside)
    return [b for b in beats if b < until_ql - 1e-6], [d for d in downbeats if d < until_ql - 1e-6]


def regular_measures(measures: list[tuple[float, float, float, str]]) -> int:
    """How many measures from the start have exactly their bar's length and follow on without a gap.

    The first measure may be an anacrusis.  After it, a short or long bar (the halves of a bar split
    around a repeat, a bar of tuplets that music21 sums to 3.987 quarters, a bar of a breve in 4/4)
    makes the beat grid uncertain, so the render stops before it.
    """
    for i, (offset, dur, _, sig) in enumerate(measures):
        num, den = (int(x) for x in sig.split("/"))
        bar = num * 4.0 / den
        follows = i == 0 or abs(measures[i - 1][0] + measures[i - 1][1] - offset) < 1e-6
        if not follows or (i > 0 and abs(dur - bar) > 1e-6) or (i == 0 and dur > bar + 1e-6):
            return i
    return len(measures)


def _score_path(piece: str) -> str:
    """The corpus file of a work, found through ``bench.corpus`` (which leaves out the held-out works)."""
    composer = piece.split("/", 1)[0]
    for path in corpus_paths(composer):
        rel = corpus_relative(path)
        if rel.rsplit(".", 1)[0] == piece:
            return path
    raise FileNotFoundError(f"{piece} is not in music21's corpus (or is held out)")


def _strip_repeats(score) -> None:
    """Remove repeat bar lines, endings and repeat expressions (music21's MIDI writer would expand them)."""
    from music21 import bar, repeat, spanner

    for m in score.recurse().getElementsByClass("Measure"):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = None
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = None
    for el in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
        el.activeSite.remove(el)


def _measures(score) -> list[tuple[float, float, float, str]]:
    """(offset, duration, left padding, time signature) of the first part's measures, in order."""
    out, sig = [], None
    for m in score.parts[0].getElementsByClass("Measure"):
        if m.timeSignature is not None:
            sig = m.timeSignature.ratioString
        if sig is None:
            raise ValueError("the first measure has no time signature")
        out.append((float(m.offset), float(m.duration.quarterLength), float(m.paddingLeft), sig))
    return out


def _write_midi(score, path: Path, *, quarter_bpm: float, programs: tuple[int, ...], until_ql: float) -> None:
    """music21's MIDI of the score, with one tempo, the given programs and nothing after `until_ql`."""
    import mido

    score.write("midi", fp=str(path))
    mid = mido.MidiFile(str(path))
    cut = int(round(until_ql * mid.ticks_per_beat))
    channel_program: dict[int, int] = {}
    for track in mid.tracks:
        events, now, sounding = [], 0, set()
        for msg in track:
            now += msg.time
            if msg.type == "set_tempo" or msg.is_meta and msg.type == "end_of_track":
                continue
            if now > cut and not msg.is_meta:
                continue
            if msg.type == "program_change" and programs:
                prog = channel_program.setdefault(msg.channel, programs[len(channel_program) % len(programs)])
                msg = msg.copy(program=prog)
            if msg.type == "note_on" and msg.velocity > 0:
                if now >= cut:
                    continue
                sounding.add((msg.channel, msg.note))
            elif msg.type in ("note_off", "note_on"):
                sounding.discard((msg.channel, msg.note))
            events.append((min(now, cut), msg))
        events += [(cut, mido.Message("note_off", channel=c, note=n, velocity=0)) for c, n in sorted(sounding)]
        track.clear()
        last = 0
        for t, msg in events:
            track.append(msg.copy(time=t - last))
            last = t
        track.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(quarter_bpm), time=0))
    mid.save(str(path))


def render(p: Plan, out_dir: Path) -> Path:
    """Render one planned piece (audio, MIDI, truth) into `out_dir`; returns the FLAC's path."""
    # refused before anything is read: the check holds without music21 installed
    if is_heldout(p.piece):
        raise ValueError(f"{p.piece} is a held-out work (bench/corpus.py): it is never rendered")
    from music21 import converter, tempo

    from fixtures.synth import render_midi

    flac = out_dir / f"{p.name}.flac"
    if flac.is_file() and flac.with_name(p.name + ".truth.json").is_file():
        return flac
    score = converter.parse(_score_path(p.piece))
    try:
        score = score.expandRepeats()
    except Exception:  # noqa: BLE001 - music21 refuses some repeat structures: render it as written
        _strip_repeats(score)
    for mark in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        mark.activeSite.remove(mark)
    measures = _measures(score)
    signatures = {m[3] for m in measures if m[0] < 4 * p.target_s}
    if signatures != {p.signature}:
        raise ValueError(f"{p.piece}: expected {p.signature} throughout, found {sorted(signatures)}")
    quarter_bpm = p.beat_bpm * beat_quarters(p.signature)
    s_per_ql = 60.0 / quarter_bpm
    # end on the first bar line past the target length, the score's end, or before the first bar
    # whose length is not its time signature's (a split bar around a repeat, an overfull bar)
    ends = [o + d for o, d, _, _ in measures[: regular_measures(measures)]]
    until = next((e for e in ends if e * s_per_ql >= p.target_s), ends[-1])
    beats, downbeats = bar_grid(measures, until_ql=until)
    if until * s_per_ql < 0.75 * MIN_S:
        raise ValueError(f"{p.piece}: only {until * s_per_ql:.0f} s of music in regular bars")

    out_dir.mkdir(parents=True, exist_ok=True)
    midi = out_dir / f"{p.name}.mid"
    _write_midi(score, midi, quarter_bpm=quarter_bpm, programs=INSTRUMENTATIONS[p.instrumentation], until_ql=until)
    x = render_midi(midi, sr=SR)[: int((until * s_per_ql + TAIL_S) * SR)]
    truth = {
        "source": f"music21 corpus {p.piece} (repeats expanded; development render, bench/devrenders.py)",
        "tempo_bpm_quarter": round(quarter_bpm, 4),
        "beat_bpm": p.beat_bpm,
        "time_signature": p.signature,
        "meter": meter_from_signature(p.signature),
        "instrumentation": p.instrumentation,
        "beats": [round(b * s_per_ql, 4) for b in beats],
        "downbeats": [round(d * s_per_ql, 4) for d in downbeats],
    }
    flac.with_name(p.name + ".truth.json").write_text(json.dumps(truth), encoding="utf-8")
    write_render(x, flac)
    return flac


def cache_dir() -> Path:
    """Where the development renders are kept (``bench/.cache/devrenders``, never committed)."""
    return bench_cache_dir() / "devrenders"


def build(out_dir: Path | None = None) -> list[Path]:
    """Render every planned piece that is missing.

    Parameters
    ----------
    out_dir : Path, optional
        Where to write (default ``cache_dir()``).

    Returns
    -------
    list of Path
        The FLACs of the pieces that rendered; one that music21 or FluidSynth cannot handle is
        skipped with a note on stderr.
    """
    out_dir = out_dir or cache_dir()
    paths = []
    for piece, sig in PIECES:
        try:
            paths.append(render(plan(piece, sig), out_dir))
        except Exception as exc:  # noqa: BLE001 - a score that will not parse or render: skip it, say so
            print(f"bench: devrenders {piece}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    return paths


if __name__ == "__main__":
    done = build()
    print(f"{len(done)} development renders in {cache_dir()}")
