"""Audio features, audio terms and the default embedding (issue 19): behaviour, genre, cost.

    python -m bench.descriptors [--eval-dir DIR] [--json OUT.json]

1. Each audio feature on inputs with a known answer: espeak speech (speechiness > 0.66), the
   instrumental renders (instrumentalness > 0.5), sung against instrumental recordings, a steady
   drum groove against rubato piano (danceability), quiet solo piano against loud distorted rock
   (energy).  Each check prints its values and whether it holds.
2. GTZAN genre zero-shot from the tags: the GTZAN genres the taggers have a tag for (MSD: blues,
   country, hip-hop, jazz, metal, pop, rock; MagnaTagATune: classical, country, metal, pop, rock),
   each scored by its tag's largest probability over the two taggers; the clip's genre is the best
   scored; accuracy on each fold (even / odd file index) and overall.  Disco and reggae have no tag
   in either tagger and are left out.
3. GTZAN genre precision@5 (leave one out, cosine) of the default embedding beside MFCC statistics
   (``bench.coldstart``'s function, same clips); the trained CNN's figure is bench.coldstart's.
4. Cost: the tagging and descriptor stages' share of the whole analysis, per 30 s clip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from .run import machine_text, resolve_eval_dir

GENRE_TAGS = {
    "blues": {"msd": "blues"},
    "classical": {"mtt": "classical"},
    "country": {"mtt": "country", "msd": "country"},
    "hiphop": {"msd": "hip-hop"},
    "jazz": {"msd": "jazz"},
    "metal": {"mtt": "metal", "msd": "metal"},
    "pop": {"mtt": "pop", "msd": "pop"},
    "rock": {"mtt": "rock", "msd": "rock"},
}


def _analyze(samples: np.ndarray, sr: int, models, name: str = "input"):
    """A synthesized input through the real decoder (written to a temporary WAV first)."""
    import tempfile

    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.wav"
        sf.write(path, np.asarray(samples, dtype=np.float32), sr, subtype="FLOAT")
        return _file(path, models)


def _file(path: Path, models):
    from analyzer.stages.audio import decode
    from analyzer.pipeline import analyze

    return analyze(decode(path), models=models)


def behaviour(eval_dir: Path, models) -> list[dict]:
    """The checks with a known answer: one row per check, with the values it compared."""
    from fixtures import synth

    rows = []

    def row(check: str, values: dict, holds: bool) -> None:
        rows.append({"check": check, "values": {k: None if v is None else round(v, 3) for k, v in values.items()},
                     "holds": bool(holds)})
        print(f"{'ok  ' if holds else 'FAIL'} {check}: {rows[-1]['values']}")

    try:
        x, sr, _ = synth.speech()
        d = _analyze(x, sr, models, "speech").descriptors
        row("espeak speech: speechiness > 0.66", {"speechiness": d.speechiness},
            d.speechiness is not None and d.speechiness > 0.66)
    except RuntimeError as exc:
        print(f"skip speech: {exc}")
    renders = sorted((eval_dir / "renders").glob("*.flac"))
    inst = {p.stem: _file(p, models).descriptors.instrumentalness for p in renders}
    share = np.mean([v is not None and v > 0.5 for v in inst.values()]) if inst else 0.0
    row(f"instrumental renders ({len(inst)}): instrumentalness > 0.5 on every one", {"fraction above": float(share),
        "lowest": min((v for v in inst.values() if v is not None), default=None)}, share == 1.0)
    lib = eval_dir / "recordings" / "librosa-data"
    sung = {"Karissa Hobbs, Let's Go Fishin'": lib / "Karissa_Hobbs_-_Lets_Go_Fishin.hq.ogg"}
    played = {"Brahms, Hungarian Dance 5 (strings)":
              lib / "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).hq.ogg",
              "Kevin MacLeod, Vibe Ace": lib / "Kevin_MacLeod_-_Vibe_Ace.hq.ogg",
              "Tchaikovsky, Sugar Plum Fairy": lib / "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.hq.ogg"}
    vs = {k: _file(p, models).descriptors.instrumentalness for k, p in {**sung, **played}.items() if p.is_file()}
    if vs:
        top_sung = max(vs[k] for k in sung if k in vs)
        row("sung recording below every instrumental one (instrumentalness)", vs,
            all(vs[k] > top_sung for k in played if k in vs))
    groove = _analyze(*synth.steady_loop(seconds=30.0)[:2], models, "groove").descriptors.danceability
    rubato = _analyze(*synth.rubato()[:2], models, "rubato").descriptors.danceability
    nocturne_path = eval_dir.parent / "models" / "skey" / "tests" / "nocturne_n02_in_e-flat_major.mp3"
    nocturne = _file(nocturne_path, models).descriptors if nocturne_path.is_file() else None
    values = {"steady drum groove": groove, "rubato piano (synth)": rubato,
              "Chopin Nocturne op. 9/2": None if nocturne is None else nocturne.danceability}
    row("danceability: steady groove above rubato piano", values,
        groove is not None and all(v is None or groove > v for k, v in values.items() if k != "steady drum groove"))
    rock_path = eval_dir / "recordings" / "essentia-audio" / "distorted.wav"
    if nocturne is not None and rock_path.is_file():
        rock = _file(rock_path, models).descriptors.energy
        row("energy: loud distorted rock above quiet solo piano", {"distorted rock": rock,
            "Chopin Nocturne (solo piano)": nocturne.energy}, rock is not None and rock > (nocturne.energy or 0))
    return rows


def genre(eval_dir: Path, models) -> dict:
    """Zero-shot genre accuracy, precision@5 of the embedding and MFCC statistics, and the stage costs."""
    from analyzer.stages.audio import decode
    from analyzer.pipeline import analyze

    from .coldstart import mfcc_stats, precision_at_5

    clips = sorted((eval_dir / "gtzan").glob("*.flac"))
    labels, pred, emb, audio, stage = [], [], [], [], []
    for i, path in enumerate(clips):
        g = path.name.split(".")[0]
        a = decode(path)
        t0 = time.perf_counter()
        an = analyze(a, models=models)
        total = time.perf_counter() - t0
        s = an.seconds_by_stage
        stage.append((s.get("tags", 0.0) + s.get("descriptors", 0.0), total, a.duration_s))
        labels.append(g)
        audio.append(a.samples)
        emb.append(an.tags.embedding())
        probs = {"mtt": an.tags.probabilities("mtt") or {}, "msd": an.tags.probabilities("msd") or {}}
        scores = {genre_: max(probs[t].get(tag, 0.0) for t, tag in tags.items()) for genre_, tags in GENRE_TAGS.items()}
        pred.append(max(scores, key=scores.get))
    known = [i for i, g in enumerate(labels) if g in GENRE_TAGS]
    folds = {"A (even)": [i for k, i in enumerate(known) if k % 2 == 0],
             "B (odd)": [i for k, i in enumerate(known) if k % 2 == 1], "all": known}
    zero_shot = {name: {"accuracy": float(np.mean([pred[i] == labels[i] for i in idx])), "clips": len(idx)}
                 for name, idx in folds.items()}
    stats = mfcc_stats(audio)
    z = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
    ok = [i for i, e in enumerate(emb) if e is not None]
    p5 = {"musicnn MSD penultimate (default embedding)": precision_at_5(np.array([emb[i] for i in ok]),
                                                                         [labels[i] for i in ok]),
          "MFCC statistics (standardized)": precision_at_5(z, labels)}
    cost = np.array(stage)
    per30 = {"tags + descriptors s per 30 s": float(np.mean(cost[:, 0] / cost[:, 2] * 30.0)),
             "whole analysis s per 30 s": float(np.mean(cost[:, 1] / cost[:, 2] * 30.0))}
    per30["share of the analysis"] = per30["tags + descriptors s per 30 s"] / per30["whole analysis s per 30 s"]
    return {"clips": len(clips), "zero_shot": zero_shot, "left_out_genres": sorted(set(labels) - set(GENRE_TAGS)),
            "confusions": [(labels[i], pred[i]) for i in known if pred[i] != labels[i]], "precision_at_5": p5,
            "cost": per30}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.descriptors", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    from analyzer.stages.features import Models

    models = Models()
    print(f"# bench.descriptors {dt.date.today()} on {machine_text()}")
    rows = behaviour(eval_dir, models)
    g = genre(eval_dir, models)
    print(f"GTZAN zero-shot genre from tags ({', '.join(GENRE_TAGS)}; left out: {', '.join(g['left_out_genres'])}):")
    for name, v in g["zero_shot"].items():
        print(f"  fold {name}: {v['accuracy']:.3f} on {v['clips']} clips")
    print("GTZAN genre precision@5 (leave one out, cosine):")
    for name, v in g["precision_at_5"].items():
        print(f"  {name}: {v:.3f}")
    print("cost per 30 s: " + ", ".join(f"{k} {v:.3f}" for k, v in g["cost"].items()))
    if args.json:
        args.json.write_text(json.dumps({"date": str(dt.date.today()), "machine": machine_text(), "behaviour": rows,
                                         **g}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
