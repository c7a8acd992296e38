"""Key: S-KEY, madmom's key CNN, Essentia's profiles and votes of them, cross-validated over files.

    python -m bench.key [--eval-dir DIR] [--sets gtzan,renders] [--json OUT.json]

For every file with a key annotation (GTZAN's human labels, the renders' music21 key
analysis) each source's evidence is computed once and cached in
``bench/.cache/key/``: S-KEY's 24 probabilities (``analyzer/stages/skey.py``), madmom's key
CNN's 24 probabilities, and Essentia's ``KeyExtractor`` (key, scale, strength) for
several profiles.  Then every way of deciding the key is scored with
``mir_eval.key.weighted_score``: each source alone, the vote the analyzer used
before (CNN + 0.4 x Essentia edma strength) and S-KEY plus weighted votes of the
others.  A vote's weights are chosen on one fold and scored on the other (folds:
even / odd index of each set's sorted file names, the sets pooled), both ways; a
way of deciding wins only if it is best on both folds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np

from .run import _jsonable, _table, machine_text, resolve_eval_dir
from .truth import bench_cache_dir, load_set, split_items

PROFILES = ("edma", "temperley", "krumhansl", "bgate", "shaath")
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
EXCERPTS = tuple(f"skey excerpts {n}, {k} averaged" for n in ("grid", "grid + tail", "evenly spread")
                 for k in ("probabilities", "logits"))
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def label(index: int) -> str:
    """'C# minor' from our index (pitch class + 12 * minor)."""
    return f"{PITCH_NAMES[index % 12]} {'minor' if index >= 12 else 'major'}"


# ---------------------------------------------------------------- evidence per file (cached)


def _source_md5() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.md5()
    for f in ("analyzer/stages/skey.py", "analyzer/stages/features.py", "analyzer/stages/key.py", "analyzer/data/skey.safetensors"):
        h.update((root / f).read_bytes())
    return h.hexdigest()[:10]


def skey_order(v: np.ndarray) -> np.ndarray:
    from analyzer.stages.skey import to_pitch_class_order

    return to_pitch_class_order(v)


def madmom_to_pitch_class_order(p: np.ndarray) -> np.ndarray:
    """madmom orders keys A major..G# major, A minor..G# minor; ours is C first."""
    p = np.asarray(p, dtype=float).reshape(-1)
    out = np.zeros(24)
    i = np.arange(24)
    out[(9 + i % 12) % 12 + 12 * (i >= 12)] = p
    return out


class Sources:
    """Every source's evidence for one decoded file, with the seconds each took."""

    def __init__(self) -> None:
        import essentia

        essentia.log.infoActive = False  # before essentia.standard, which logs on import
        import essentia.standard as es
        from madmom.features.key import CNNKeyRecognitionProcessor

        from analyzer.stages.features import Models, configure_onnxruntime

        configure_onnxruntime()  # madmom's CNN timed with the same ONNX settings as the analyzer's networks
        self.models = Models()
        self.key_cnn = CNNKeyRecognitionProcessor()
        self.essentia = {prof: es.KeyExtractor(profileType=prof, sampleRate=22050.0) for prof in PROFILES}

    def evidence(self, samples: np.ndarray, sr: int) -> dict:
        from madmom.audio.signal import Signal
        from threadpoolctl import threadpool_limits

        from analyzer.stages import features as F

        pcs = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
        flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
        y = np.ascontiguousarray(samples, dtype=np.float32)
        out: dict = {"seconds": {}}
        t = time.perf_counter()
        p = F.skey_probabilities(samples=y, sr=sr, models=self.models)
        out["seconds"]["skey"] = time.perf_counter() - t
        out["skey"] = np.zeros(24) if p is None else p
        # the alternatives: 15 s excerpts (the length it was trained on), placed three ways, their
        # probabilities or their logits averaged
        t = time.perf_counter()
        win, hop = int(15 * sr), int(7.5 * sr)
        grid = list(range(0, max(len(y) - win, 0) + 1, hop))
        tail = grid + ([len(y) - win] if grid[-1] + win < len(y) else [])
        even = np.linspace(0, max(len(y) - win, 0), int(np.ceil(max(len(y) - win, 0) / hop)) + 1).astype(int)
        net = self.models.skey
        with threadpool_limits(limits=1, user_api="blas"):
            for name, starts in (("grid", grid), ("grid + tail", tail), ("evenly spread", even)):
                z = np.array([net.logits(net.log_cqt(y[a : a + win])).reshape(-1) for a in starts])
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                out[f"skey excerpts {name}, probabilities averaged"] = skey_order(p.mean(axis=0))
                out[f"skey excerpts {name}, logits averaged"] = skey_order(z.mean(axis=0))
        out["seconds"]["skey excerpts (all six)"] = time.perf_counter() - t
        t = time.perf_counter()
        sig = Signal(F.upsample_for_madmom(y, sr), sample_rate=F.MADMOM_SR, num_channels=1)
        out["madmom"] = madmom_to_pitch_class_order(self.key_cnn(sig))
        out["seconds"]["madmom"] = time.perf_counter() - t
        for prof, extractor in self.essentia.items():
            t = time.perf_counter()
            name, scale, strength = extractor(y)
            out["seconds"][f"essentia:{prof}"] = time.perf_counter() - t
            pc = pcs.index(flats.get(name, name))
            out[f"essentia:{prof}"] = np.array([pc + 12 * (scale == "minor"), float(strength)])
        return out


def collect(items, cache: Path) -> list[dict]:
    from analyzer.stages.audio import decode

    cache.mkdir(parents=True, exist_ok=True)
    version = _source_md5()
    sources = None
    records = []
    for it in items:
        key = hashlib.md5(f"{it.path.resolve()}|{it.path.stat().st_size}|{version}".encode()).hexdigest()[:16]
        path = cache / f"{key}.json"
        if path.exists():
            ev = json.loads(path.read_text(encoding="utf-8"))
        else:
            if sources is None:
                sources = Sources()
            audio = decode(it.path)
            ev = sources.evidence(audio.samples, audio.sr)
            ev["duration_s"] = audio.duration_s
            ev = _jsonable(ev)
            path.write_text(json.dumps(ev), encoding="utf-8")
            print(f"bench.key: {it.set}/{it.name} done", flush=True)
        records.append({"set": it.set, "name": it.name, "group": it.group, "truth": it.truth.key,
                        **{k: (np.asarray(v) if isinstance(v, list) else v) for k, v in ev.items()}})
    return records


# ---------------------------------------------------------------- ways of deciding


def one_hot(index: float, strength: float) -> np.ndarray:
    v = np.zeros(24)
    v[int(index)] = strength
    return v


def decide(rec: dict, way: str, params: tuple) -> str:
    """The key label a way of deciding gives for one file."""
    if way in ("skey", "madmom", *EXCERPTS):
        return label(int(np.argmax(rec[way])))
    if way.startswith("essentia:"):
        return label(int(rec[way][0]))
    if way == "before: madmom + 0.4 x essentia edma":
        p = rec["madmom"] / max(rec["madmom"].sum(), 1e-12) + one_hot(*rec["essentia:edma"]) * 0.4
        return label(int(np.argmax(p)))
    if way == "skey + w x madmom":
        (w,) = params
        return label(int(np.argmax(rec["skey"] + w * rec["madmom"])))
    if way == "skey + w x essentia":
        w, prof = params
        return label(int(np.argmax(rec["skey"] + w * one_hot(*rec[f"essentia:{prof}"]))))
    if way == "skey + w1 x madmom + w2 x essentia":
        w1, w2, prof = params
        return label(int(np.argmax(rec["skey"] + w1 * rec["madmom"] + w2 * one_hot(*rec[f"essentia:{prof}"]))))
    raise ValueError(way)


WAYS: dict[str, list[tuple]] = {
    "skey": [()],
    **{e: [()] for e in EXCERPTS},
    "madmom": [()],
    **{f"essentia:{p}": [()] for p in PROFILES},
    "before: madmom + 0.4 x essentia edma": [()],
    "skey + w x madmom": [(w,) for w in WEIGHTS],
    "skey + w x essentia": [(w, p) for w in WEIGHTS for p in PROFILES],
    "skey + w1 x madmom + w2 x essentia": [(w1, w2, p) for w1, w2, p in itertools.product(WEIGHTS, WEIGHTS, PROFILES)],
}


def score(records: list[dict], way: str, params: tuple) -> float:
    import mir_eval

    return float(np.mean([mir_eval.key.weighted_score(r["truth"], decide(r, way, params)) for r in records]))


def cross_validate(folds: list[list[dict]]) -> dict:
    """Per way: the out-of-fold score on each fold (parameters chosen on the other) and the parameters chosen."""
    out = {}
    for way, grid in WAYS.items():
        res = {"folds": [], "chosen": []}
        for k in range(2):
            train, test = folds[1 - k], folds[k]
            # ties go to the first in the grid: the smaller weight, the simpler vote
            best = max(grid, key=lambda prm: (score(train, way, prm), -grid.index(prm)))
            res["folds"].append(score(test, way, best))
            res["chosen"].append(list(best))
        res["all_in_sample"] = max(score(folds[0] + folds[1], way, prm) for prm in grid)
        out[way] = res
    return out


def per_group(records: list[dict], ways: dict[str, tuple]) -> dict:
    groups = sorted({r["group"] for r in records})
    return {g: {w: score([r for r in records if r["group"] == g], w, prm) for w, prm in ways.items()} for g in groups}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.key", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default="gtzan,renders")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    cache = bench_cache_dir() / "key"
    folds: list[list[dict]] = [[], []]
    by_set: dict[str, list[dict]] = {}
    for name in args.sets.split(","):
        items = [it for it in load_set(name, eval_dir) if it.truth.key is not None]
        if not items:
            continue
        recs = collect(items, cache)
        by_set[name] = recs
        dev = {it.name for it in split_items(items, "dev")}
        for r in recs:
            folds[0 if r["name"] in dev else 1].append(r)
    if not by_set:
        raise SystemExit(f"no key annotations under {eval_dir}")
    cv = cross_validate(folds)
    rows = [[way, f"{r['folds'][0]:.3f}", f"{r['folds'][1]:.3f}", f"{np.mean(r['folds']):.3f}",
             "; ".join(str(tuple(c)) for c in r["chosen"]) if r["chosen"][0] else "–", f"{r['all_in_sample']:.3f}"]
            for way, r in cv.items()]
    n0, n1 = len(folds[0]), len(folds[1])
    print(f"# Key {dt.date.today().isoformat()}\n\nMachine: {machine_text()}; files with a key: "
          + ", ".join(f"{k} {len(v)}" for k, v in by_set.items()) + f"; folds {n0} / {n1}\n")
    print(_table(["way", f"fold A ({n0})", f"fold B ({n1})", "mean", "chosen on the other fold (A; B)",
                  "all files, best in-sample"], rows))
    # each set on its own, with the parameters chosen on all files (in-sample: for the per-set picture only)
    fixed = {}
    for way, grid in WAYS.items():
        allr = folds[0] + folds[1]
        fixed[way] = max(grid, key=lambda prm: (score(allr, way, prm), -grid.index(prm)))
    print()
    set_rows = [[way] + [f"{score(by_set[s], way, fixed[way]):.3f}" for s in by_set] for way in WAYS]
    print(_table(["way (in-sample parameters)", *by_set], set_rows))
    speed = {}
    for recs in by_set.values():
        for r in recs:
            for src, sec in r["seconds"].items():
                speed.setdefault(src, []).append(sec / max(r["duration_s"], 1e-9) * 30.0)
    print("\nSeconds per 30 s of audio: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in speed.items()))
    if "gtzan" in by_set:
        main_ways = {w: fixed[w] for w in ("skey", "madmom", "essentia:edma", "before: madmom + 0.4 x essentia edma",
                                           "skey + w x madmom", "skey + w x essentia")}
        groups = per_group(by_set["gtzan"], main_ways)
        print("\nGTZAN per genre:\n")
        print(_table(["genre", *main_ways], [[g] + [f"{v:.2f}" for v in vals.values()] for g, vals in groups.items()]))
    if args.json:
        args.json.write_text(json.dumps(_jsonable({
            "date": dt.date.today().isoformat(), "folds": [n0, n1], "cv": cv,
            "per_set": {s: {w: score(by_set[s], w, fixed[w]) for w in WAYS} for s in by_set},
            "seconds_per_30s": {k: float(np.mean(v)) for k, v in speed.items()},
            "files": {s: [{"name": r["name"], "truth": r["truth"], "skey": decide(r, "skey", ()),
                           "madmom": decide(r, "madmom", ())} for r in recs] for s, recs in by_set.items()},
        }), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
