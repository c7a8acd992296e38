"""Medleys: excerpts of different pieces joined end to end; the joins are exact section boundaries.

Built on the fly from the renders and recordings in the eval folder (never
committed: the audio stays research-licensed), into a cache folder, the same
medleys every time for the same eval folder (seeded).  Each excerpt is brought
to the same RMS, so a join is not given away by a jump in level alone, and
joined with a 20 ms raised-cosine crossfade, so not by a click either.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

SR = 22050
N_MEDLEYS = 10
PIECES_PER_MEDLEY = (3, 5)
EXCERPT_S = (12.0, 35.0)
MIN_SOURCE_S = 20.0
CROSSFADE_S = 0.02
SEED = 20261128


def _sources(eval_dir: Path) -> list[Path]:
    from analyzer.run.batch import AUDIO_EXTENSIONS

    found = []
    for sub in ("renders", "recordings"):
        folder = eval_dir / sub
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    return found


def build(eval_dir: Path, cache_dir: Path) -> list[tuple[Path, np.ndarray]]:
    """(medley path, join times in s) for each medley; reuses the cache when the sources are the same."""
    import soundfile as sf

    from analyzer.stages.audio import decode

    sources = _sources(eval_dir)
    key = hashlib.md5(
        json.dumps([SEED, N_MEDLEYS, [str(p.relative_to(eval_dir)) for p in sources]]).encode()
    ).hexdigest()[:12]
    out_dir = cache_dir / f"medleys-{key}"
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return [(out_dir / d["file"], np.array(d["joins_s"])) for d in data]

    audio = {}
    for p in sources:
        a = decode(p)
        if a.duration_s >= MIN_SOURCE_S:
            audio[p] = a.samples.astype(np.float64)
    names = sorted(audio, key=str)
    if len(names) < PIECES_PER_MEDLEY[1]:
        return []
    rng = np.random.default_rng(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    xf = int(CROSSFADE_S * SR)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, xf))
    for m in range(N_MEDLEYS):
        k = int(rng.integers(PIECES_PER_MEDLEY[0], PIECES_PER_MEDLEY[1] + 1))
        picks = rng.choice(len(names), size=k, replace=False)
        parts, pieces = [], []
        for i in picks:
            x = audio[names[i]]
            length = int(rng.uniform(*EXCERPT_S) * SR)
            length = min(length, len(x))
            start = int(rng.integers(0, len(x) - length + 1))
            seg = x[start : start + length]
            # the same RMS over the loud part (silent intros would skew a plain RMS)
            frames = seg[: len(seg) // 1024 * 1024].reshape(-1, 1024)
            rms = np.sqrt(np.mean(frames**2, axis=1))
            level = np.sqrt(np.mean(np.sort(rms)[len(rms) // 2 :] ** 2)) if rms.size else 1.0
            parts.append(seg * (0.1 / max(level, 1e-6)))
            pieces.append(str(names[i].relative_to(eval_dir)))
        y = parts[0]
        joins = []
        for seg in parts[1:]:
            joins.append((len(y) - xf / 2) / SR)
            y = np.concatenate([y[:-xf], y[-xf:] * ramp[::-1] + seg[:xf] * ramp, seg[xf:]])
        y = y / max(1.0, float(np.abs(y).max()) / 0.98)
        name = f"medley_{m:02d}.flac"
        sf.write(out_dir / name, y.astype(np.float32), SR)
        entries.append({"file": name, "joins_s": [round(j, 4) for j in joins], "pieces": pieces})
    manifest.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return [(out_dir / d["file"], np.array(d["joins_s"])) for d in entries]
