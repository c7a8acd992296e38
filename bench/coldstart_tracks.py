"""Tracks for the cold-start bench: scores from the music21 corpus rendered with FluidSynth in varied
instruments, tempi, keys and with or without drums.  Cached in bench/.cache/coldstart (not committed).

Each track's audible facts (style, instrument family, tempo, mode, drums) go to `tracks.json` beside
the audio: the simulated listeners of `bench.coldstart` choose by them; the models never see them.

    python -m bench.coldstart_tracks --tracks 2000 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "coldstart"
SR = 22050
CLIP_S = 12.0

# style -> (corpus composer, how many pieces at most)
STYLES = {
    "chorale": [("bach", 160)],
    "renaissance": [("palestrina", 90), ("monteverdi", 40), ("josquin", 8)],
    "medieval": [("trecento", 70), ("ciconia", 1), ("luca", 1)],
    "classical": [("beethoven", 26), ("mozart", 16), ("haydn", 9), ("cpebach", 1), ("chopin", 1), ("weber", 1)],
    "folk": [("ryansMammoth", 16), ("oneills1850", 10), ("essenFolksong", 6), ("airdsAirs", 4)],
}
# a file holding many tunes (the folk collections) gives up to this many of them
TUNES_PER_COLLECTION = 8
# instrument family -> General MIDI programs (one is drawn per part)
FAMILIES = {
    "keys": (0, 1, 4, 6), "organ": (16, 19, 20), "guitar": (24, 25, 26), "strings": (40, 41, 42, 48, 49),
    "brass": (56, 57, 60, 61), "winds": (68, 71, 73, 70), "synth": (80, 81, 87, 90), "mallets": (11, 12, 13, 8),
}
TEMPI = {"slow": (58, 80), "medium": (90, 118), "fast": (128, 165)}


def pieces() -> list[tuple[str, str]]:
    """(style, corpus path) pairs, a fixed selection spread evenly over each composer's works."""
    from .corpus import corpus_paths

    out = []
    for style, sources in STYLES.items():
        for composer, n in sources:
            paths = corpus_paths(composer)  # the held-out works removed
            if not paths:
                continue
            idx = np.unique(np.linspace(0, len(paths) - 1, num=min(n, len(paths))).astype(int))
            out += [(style, paths[i]) for i in idx]
    return out


def _scores(path: str) -> list:
    """The file's score, or up to TUNES_PER_COLLECTION tunes spread over a collection, parsed once."""
    from music21 import converter

    parsed = converter.parse(path)
    if hasattr(parsed, "scores"):
        tunes = list(parsed.scores)
        idx = np.unique(np.linspace(0, len(tunes) - 1, num=min(TUNES_PER_COLLECTION, len(tunes))).astype(int))
        return [tunes[i] for i in idx]
    return [parsed]


def _notes(score):
    """(notes in quarter lengths (start, dur, pitch, part), music21's mode, parts) of the first 24 bars."""
    if score.parts and len(score.parts[0].getElementsByClass("Measure")) > 24:
        score = score.measures(0, 24)
    mode = score.analyze("key").mode
    notes = []
    parts = list(score.parts) or [score]
    for k, part in enumerate(parts[:4]):
        for n in part.flatten().notes:
            for p in getattr(n, "pitches", ()):
                if n.duration.quarterLength > 0:
                    notes.append((float(n.offset), float(n.duration.quarterLength), int(p.midi), k))
    return notes, mode, len(parts[:4])


def _drums(end_beat: float) -> list[tuple[float, float, int, int, int]]:
    out = []
    b = 0.0
    while b < end_beat:
        out.append((b, 0.25, 42, 70, 9))  # closed hat on every eighth
        out.append((b + 0.5, 0.25, 42, 55, 9))
        out.append((b, 0.25, 36 if int(b) % 2 == 0 else 38, 100, 9))  # kick on 1 and 3, snare on 2 and 4
        b += 1.0
    return out


def render_source(job: tuple) -> list[dict]:
    """Every variant of every score in one corpus file (parsed once)."""
    idx, style, path, variants = job
    done = [CACHE / f"{idx:04d}_{t}_{v}.json" for t in range(TUNES_PER_COLLECTION) for v in range(variants)]
    if (CACHE / f"{idx:04d}.done").is_file():
        return [json.loads(p.read_text()) for p in done if p.is_file()]
    try:
        scores = _scores(path)
    except Exception as exc:  # noqa: BLE001 - a corpus file music21 cannot read: skipped, said
        print(f"bench: {path}: skipped ({type(exc).__name__})", file=sys.stderr)
        return []
    out = []
    for t, score in enumerate(scores):
        try:
            parsed = _notes(score)
        except Exception as exc:  # noqa: BLE001
            print(f"bench: {path} #{t}: skipped ({type(exc).__name__})", file=sys.stderr)
            continue
        # a collection's tunes share the file's variants between them
        for v in range(variants if len(scores) == 1 else max(1, variants // 2)):
            m = render_variant(f"{idx:04d}_{t}_{v}", style, path, parsed, 1_000_000 * idx + 1000 * t + v)
            if m:
                out.append(m)
    (CACHE / f"{idx:04d}.done").write_text(str(len(out)))
    return out


def render_variant(name: str, style: str, path: str, parsed, seed: int) -> dict | None:
    from fixtures.synth import render_midi, write_midi

    out = CACHE / f"{name}.flac"
    meta_path = CACHE / f"{name}.json"
    if out.is_file() and meta_path.is_file():
        return json.loads(meta_path.read_text())
    import soundfile as sf

    rng = np.random.default_rng(seed)
    notes, mode, n_parts = parsed
    if len(notes) < 8:
        return None
    family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
    tempo_class = list(TEMPI)[int(rng.integers(len(TEMPI)))]
    bpm = float(rng.uniform(*TEMPI[tempo_class]))
    drums = bool(rng.random() < 0.5)
    shift = int(rng.integers(-3, 4))
    end_beat = CLIP_S * bpm / 60.0 + 1.0
    programs = {k: int(rng.choice(FAMILIES[family])) for k in range(n_parts)}
    midi_notes = [(s, min(d, 8.0), min(max(p + shift, 21), 108), int(rng.integers(70, 100)), k)
                  for s, d, p, k in notes if s < end_beat]
    if drums:
        midi_notes += _drums(end_beat)
    with tempfile.TemporaryDirectory() as tmp:
        mid = write_midi(Path(tmp) / "x.mid", notes=midi_notes, programs=programs, tempo_map=[(0.0, bpm)],
                         end_beat=end_beat)
        try:
            x = render_midi(mid, sr=SR).mean(axis=1)
        except RuntimeError as exc:
            print(f"bench: {path}: render failed ({exc})", file=sys.stderr)
            return None
    x = x[: int(CLIP_S * SR)]
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak < 1e-4 or len(x) < SR * 4:
        return None
    x = x / peak * float(rng.uniform(0.3, 0.8))
    meta = {"name": name, "style": style, "source": path.split("corpus/")[-1], "family": family,
            "tempo_class": tempo_class, "bpm": round(bpm, 1), "mode": mode, "drums": drums, "transpose": shift}
    tmp_out = out.with_suffix(".tmp.flac")
    sf.write(tmp_out, x.astype(np.float32), SR)
    tmp_out.replace(out)
    meta_path.write_text(json.dumps(meta))
    return meta


def build(n_tracks: int, jobs: int) -> list[dict]:
    CACHE.mkdir(parents=True, exist_ok=True)
    ps = pieces()
    # collections give several tunes: count them as 4 pieces each when sharing out the variants
    weight = sum(4 if style == "folk" else 1 for style, _ in ps)
    variants = max(1, int(np.ceil(n_tracks / weight)))
    work = [(i, style, path, variants) for i, (style, path) in enumerate(ps)]
    t0 = time.perf_counter()
    metas = []
    with ProcessPoolExecutor(jobs) as ex:
        for k, ms in enumerate(ex.map(render_source, work)):
            metas += ms
            if (k + 1) % 50 == 0:
                print(f"bench: {k + 1}/{len(work)} corpus files, {len(metas)} tracks in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
    (CACHE / "tracks.json").write_text(json.dumps(metas))
    return metas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    metas = build(args.tracks, args.jobs)
    print(f"bench: {len(metas)} tracks in {CACHE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
