"""The evaluation sets and their annotations, read in place from the eval folder.

Nothing here is copied into the repository: the eval corpus is research-licensed,
so every loader takes the folder as an argument and reads the files where they lie.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analyzer.run.batch import AUDIO_EXTENSIONS

SETS = ("gtzan", "renders", "recordings", "structure", "medleys", "asap")
SPLITS = ("all", "dev", "heldout")

# music21 spells flats with '-' ("A- major") and minor keys in lower case ("f# minor")
_M21_KEY = re.compile(r"^([A-Ga-g])([#-]?)\s+(major|minor)$")


@dataclass
class Truth:
    """What is known about one file; None where the set has no such annotation."""

    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
    tempo: float | None = None
    key: str | None = None  # mir_eval spelling, e.g. "F# minor"
    meter: int | None = None  # beats per bar, compound meters counted in dotted beats (6/8 -> 2)
    section_intervals: list[np.ndarray] = field(default_factory=list)  # one (n, 2) array per annotator
    onsets: np.ndarray | None = None
    # (n, 3): start s, end s, MIDI pitch of every note the score sounds (renders only)
    notes: np.ndarray | None = None


@dataclass
class Item:
    set: str
    name: str
    path: Path
    group: str  # gtzan genre; the set's name elsewhere
    truth: Truth


def load_set(name: str, eval_dir: Path) -> list[Item]:
    if name == "medleys":
        return _medleys(eval_dir)
    loaders = {
        "gtzan": _gtzan,
        "renders": _renders,
        "recordings": _recordings,
        "structure": _structure,
        "asap": _asap,
    }
    folder = eval_dir / name
    if not folder.is_dir():
        return []
    return sorted(loaders[name](folder), key=lambda it: it.name)


def split_items(items: list[Item], split: str) -> list[Item]:
    """Deterministic halves: sorted names, even index = dev, odd index = heldout."""
    if split == "all":
        return items
    ordered = sorted(items, key=lambda it: it.name)
    parity = 0 if split == "dev" else 1
    return [it for i, it in enumerate(ordered) if i % 2 == parity]


def _read_columns(path: Path) -> np.ndarray:
    """Whitespace-separated numbers, '#' comments skipped; always 2-D."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append([float(x) for x in line.split()])
    if not rows:
        return np.zeros((0, 1))
    width = min(len(r) for r in rows)
    return np.array([r[:width] for r in rows], dtype=float)


def _gtzan(folder: Path) -> list[Item]:
    keys = {}
    keys_file = folder / "keys.tsv"
    if keys_file.exists():
        for line in keys_file.read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                clip, key = line.split("\t", 1)
                keys[clip.strip()] = key.strip()
    items = []
    for audio in folder.glob("*.flac"):
        stem = audio.stem
        t = Truth(key=keys.get(stem))
        beats_file = audio.with_suffix(".beats")
        if beats_file.exists():
            cols = _read_columns(beats_file)
            t.beats = cols[:, 0]
            if cols.shape[1] > 1:
                # column 2 is the beat's position in its bar: 1 = downbeat, max = beats per bar
                t.downbeats = cols[cols[:, 1] == 1, 0]
                t.meter = int(cols[:, 1].max())
        bpm_file = audio.with_suffix(".bpm")
        if bpm_file.exists():
            t.tempo = float(_read_columns(bpm_file)[0, 0])
        items.append(Item("gtzan", stem, audio, stem.split(".")[0], t))
    return items


def music21_key_to_mir_eval(label: str) -> str | None:
    m = _M21_KEY.match(label.strip())
    if not m:
        return None
    letter, accidental, mode = m.groups()
    return f"{letter.upper()}{'b' if accidental == '-' else accidental} {mode}"


def meter_from_signature(sig: str) -> int:
    """'3/4' -> 3; compound meters count dotted beats: '6/8' -> 2, '9/8' -> 3, '12/8' -> 4."""
    num, den = (int(x) for x in sig.split("/"))
    if den == 8 and num > 3 and num % 3 == 0:
        return num // 3
    return num


def _flac_with_truth(folder: Path):
    """(audio, its parsed NAME.truth.json) for each NAME.flac in `folder` that has one."""
    for audio in folder.glob("*.flac"):
        truth_file = audio.with_name(audio.stem + ".truth.json")
        if truth_file.exists():
            yield audio, json.loads(truth_file.read_text(encoding="utf-8"))


def _renders(folder: Path) -> list[Item]:
    items = []
    for audio, d in _flac_with_truth(folder):
        beats = np.asarray(d["beats"], dtype=float)
        t = Truth(
            beats=beats,
            downbeats=np.asarray(d["downbeats"], dtype=float),
            # the score's beat (the dotted quarter in 6/8) from the exact beat times,
            # not the quarter-note tempo the render was made at
            tempo=float(60.0 / np.median(np.diff(beats))) if len(beats) > 2 else None,
            key=music21_key_to_mir_eval(d.get("key_music21_analysis", "")),
            meter=meter_from_signature(d["time_signature"]),
        )
        midi = audio.with_suffix(".mid")
        if midi.exists():
            t.notes = midi_notes(midi)
            t.onsets = merge_onsets(t.notes[:, 0])
        items.append(Item("renders", audio.stem, audio, "renders", t))
    return items


def meter_family(signature: str) -> str:
    """'duple' (2/4, 2/2, 4/4, 4/8, 4/2), 'triple' (3/4, 3/8, 3/2), 'compound' (6/8, 9/8, 12/8, 12/16), else 'other'."""
    num, den = (int(x) for x in signature.split("/"))
    if den >= 8 and num > 3 and num % 3 == 0:
        return "compound"
    return {2: "duple", 4: "duple", 3: "triple"}.get(num, "other")


def dominant_signature(changes: list, end_s: float) -> tuple[str, int]:
    """The time signature (and its index in `changes`) that lasts longest among [time, "n/d"] changes up to `end_s`."""
    spans: dict[str, float] = {}
    for i, (t, sig) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else end_s
        spans[sig] = spans.get(sig, 0.0) + max(float(stop) - float(t), 0.0)
    best = max(spans, key=spans.get)
    return best, next(i for i, (_, sig) in enumerate(changes) if sig == best)


def _asap(folder: Path) -> list[Item]:
    """ASAP excerpts (human-timed piano performances): beats, downbeats, meter as ASAP counts it.

    The meter is the beats per bar (ASAP's count: numerator, or numerator / 3 for compound
    meters) of the time signature that lasts longest in the excerpt; the group is its family.
    """
    items = []
    for audio, d in _flac_with_truth(folder):
        beats = np.asarray(d["beats"], dtype=float)
        end_s = float(d.get("audio_duration_s", beats[-1] if len(beats) else 0.0))
        sig, i = dominant_signature(d["time_signature"], end_s)
        t = Truth(
            beats=beats,
            downbeats=np.asarray(d["downbeats"], dtype=float),
            tempo=float(60.0 / np.median(np.diff(beats))) if len(beats) > 2 else None,
            meter=int(d["beats_per_bar"][i][1]),
        )
        items.append(Item("asap", audio.stem, audio, meter_family(sig), t))
    return items


def midi_notes(path: Path) -> np.ndarray:
    """(n, 3) start s, end s, pitch of every note in a MIDI file, in time order (tempo map applied by mido)."""
    import mido

    now_s = 0.0
    sounding: dict[tuple[int, int], list[float]] = {}
    notes = []
    for msg in mido.MidiFile(str(path)):
        now_s += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.setdefault((msg.channel, msg.note), []).append(now_s)
        elif msg.type in ("note_off", "note_on") and sounding.get((msg.channel, msg.note)):
            notes.append((sounding[(msg.channel, msg.note)].pop(0), now_s, msg.note))
    return np.array(sorted(notes), dtype=float).reshape(-1, 3)


def merge_onsets(starts_s: np.ndarray, within_s: float = 0.03) -> np.ndarray:
    """Note starts as perceived onsets: a chord's notes (within 30 ms) are one onset."""
    out: list[float] = []
    for t in np.sort(starts_s):
        if not out or t - out[-1] > within_s:
            out.append(float(t))
    return np.array(out)


def _recordings(folder: Path) -> list[Item]:
    items = []
    for audio in folder.rglob("*"):
        if audio.suffix.lower() not in AUDIO_EXTENSIONS or not audio.is_file():
            continue
        t = Truth()
        # madmom's sample has human beats/onsets/tempo beside it; the rest have only weak labels
        if audio.with_suffix(".beats").exists():
            t.beats = _read_columns(audio.with_suffix(".beats"))[:, 0]
        if audio.with_suffix(".onsets").exists():
            t.onsets = _read_columns(audio.with_suffix(".onsets"))[:, 0]
        if audio.with_suffix(".tempo").exists():
            # first value: the dominant tempo (the file lists tempo, tempo, weight)
            t.tempo = float(_read_columns(audio.with_suffix(".tempo"))[0, 0])
        rel = audio.relative_to(folder)
        items.append(Item("recordings", str(rel), audio, rel.parts[0], t))
    return items


def _structure(folder: Path) -> list[Item]:
    items = []
    for jams in folder.rglob("*.refs.jams"):
        stem = jams.name[: -len(".refs.jams")]
        audio = next(
            (p for p in jams.parent.glob(stem + ".*") if p.suffix.lower() in AUDIO_EXTENSIONS), None
        )
        if audio is None:  # annotations of a full song we have no audio for
            continue
        t = Truth(section_intervals=read_jams_sections(jams))
        items.append(Item("structure", str(audio.relative_to(folder)), audio, "structure", t))
    return items


def bench_cache_dir() -> Path:
    import os

    return Path(os.environ.get("ANALYZER_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))


def _medleys(eval_dir: Path) -> list[Item]:
    import soundfile as sf

    from .medleys import build

    items = []
    for path, joins in build(eval_dir, bench_cache_dir()):
        duration = sf.info(str(path)).duration
        edges = np.concatenate(([0.0], joins, [duration]))
        t = Truth(section_intervals=[np.stack([edges[:-1], edges[1:]], axis=1)])
        items.append(Item("medleys", path.stem, path, "medleys", t))
    return items


def read_jams_sections(path: Path) -> list[np.ndarray]:
    """(n, 2) interval arrays, one per 'segment_open' annotation (annotator)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for ann in doc.get("annotations", []):
        if ann.get("namespace") != "segment_open":
            continue
        data = ann.get("data", [])
        if isinstance(data, dict):  # JAMS "sparse" layout: parallel lists
            rows = list(zip(data.get("time", []), data.get("duration", [])))
        else:
            rows = [(d["time"], d["duration"]) for d in data]
        if rows:
            iv = np.array([[t, t + d] for t, d in rows], dtype=float)
            out.append(iv[np.argsort(iv[:, 0])])
    return out
