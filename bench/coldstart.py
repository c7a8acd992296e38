"""Cold start: can the audio CNN place songs nobody has played among the songs people play?

Semi-synthetic, in one run with its baselines beside it:
  tracks   music21 scores rendered in varied instruments, tempi, keys, with or without drums
           (`bench.coldstart_tracks`, cached), plus the GTZAN clips of ../shared/eval;
  listeners simulated: each likes a few styles, instrument families, a tempo, a mode, drums or
           not (all audible), and plays tracks accordingly, with a popularity skew;
  split    20 % of the tracks are cold (no plays at all).  Each listener's plays of cold tracks are
           halved: the ALS ceiling trains on one half (its view of the cold tracks), every method
           is scored on the other half, ranking only the cold tracks.

Methods: ALS trained on the warm plays + the CNN's predicted factors for the cold tracks; the same
head on MFCC means and spreads (the baseline); random; and the ALS ceiling.  Beside them, musicnn's
MSD tagger (the analyzer's default embedding): its embedding with `recommend fit`'s ridge map and no
training; the factor head trained on top of the frozen embedding; and the head trained together with
musicnn's back end started from the MSD weights (`cnn.musicnn_head`).  Then GTZAN genre precision@5
of the embeddings (genre never used in training) and speed.

    python -m bench.coldstart [--tracks 2000] [--epochs 40] [--no-logmel-cnn]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SR = 22050
CLIP_S = 12.0


def load_corpus(eval_dir: Path, n_tracks: int, jobs: int):
    """(names, audio, tokens per track, genre or None per track)."""
    import soundfile as sf

    from bench.coldstart_tracks import CACHE, build

    metas = build(n_tracks, jobs)
    names, audio, tokens, genre = [], [], [], []
    for m in metas:
        x, sr = sf.read(CACHE / f"{m['name']}.flac", dtype="float32")
        names.append(m["name"])
        audio.append(x[: int(CLIP_S * SR)])
        tokens.append({f"style:{m['style']}", f"family:{m['family']}", f"tempo:{m['tempo_class']}",
                       f"mode:{m['mode']}", f"drums:{m['drums']}"})
        genre.append(None)
    g = eval_dir / "gtzan"
    keys = {}
    if (g / "keys.tsv").is_file():
        for line in (g / "keys.tsv").read_text().splitlines():
            if "\t" in line:
                k, v = line.split("\t")
                keys[k] = v.split()[-1]
    for f in sorted(g.glob("*.flac")):
        x, sr = sf.read(f, dtype="float32")
        if x.ndim > 1:
            x = x.mean(axis=1)
        if sr != SR:
            continue
        mid = max(0, len(x) // 2 - int(CLIP_S * SR / 2))
        gen = f.name.split(".")[0]
        bpm = float((g / f.name.replace(".flac", ".bpm")).read_text().split()[0]) if (g / f.name.replace(".flac", ".bpm")).is_file() else 0
        tempo = "slow" if bpm < 85 else "medium" if bpm < 122 else "fast"
        t = {f"style:gtzan-{gen}", f"tempo:{tempo}"}
        if f.stem in keys:
            t.add(f"mode:{keys[f.stem]}")
        names.append(f"gtzan:{f.stem}")
        audio.append(x[mid : mid + int(CLIP_S * SR)])
        tokens.append(t)
        genre.append(gen)
    return names, audio, tokens, genre


def simulate_listeners(tokens: list[set[str]], n_users: int, seed: int) -> sp.csr_matrix:
    """Play counts users x tracks from tastes over audible tokens plus a popularity skew."""
    rng = np.random.default_rng(seed)
    vocab = sorted(set().union(*tokens))
    ti = {t: i for i, t in enumerate(vocab)}
    has = np.zeros((len(tokens), len(vocab)), dtype=np.float32)
    for k, ts in enumerate(tokens):
        for t in ts:
            has[k, ti[t]] = 1.0
    groups = {}
    for t in vocab:
        groups.setdefault(t.split(":")[0], []).append(ti[t])
    boost = {"style": (2, 2.5), "family": (2, 1.8), "tempo": (1, 1.2), "mode": (1, 0.8), "drums": (1, 1.0)}
    pop = rng.lognormal(0.0, 0.8, len(tokens))
    rows, cols, vals = [], [], []
    for u in range(n_users):
        w = rng.normal(0.0, 0.4, len(vocab))
        for g, idx in groups.items():
            k, b = boost[g]
            for i in rng.choice(idx, size=min(k, len(idx)), replace=False):
                w[i] += b
        aff = has @ w + 0.5 * np.log(pop)
        n = 15 + int(rng.poisson(25))
        # Gumbel top-k: n tracks drawn without replacement with probability ~ exp(affinity / 0.7)
        key = aff / 0.7 + rng.gumbel(size=len(aff))
        chosen = np.argpartition(-key, n)[:n]
        plays = 1 + rng.geometric(1.0 / (1.0 + np.exp(aff[chosen] - aff[chosen].mean())), len(chosen))
        rows += [u] * n
        cols += chosen.tolist()
        vals += plays.tolist()
    return sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n_users, len(tokens)))


def ndcg_cold(scores: np.ndarray, cold: np.ndarray, seen: sp.csr_matrix, truth: list[np.ndarray], k: int = 10) -> float:
    """NDCG@k ranking only the cold tracks, the ones the ceiling saw excluded."""
    s = np.full(scores.shape, -np.inf, dtype=np.float64)
    s[:, cold] = scores[:, cold]
    r = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    s[r, seen.indices] = -np.inf
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    vals = []
    for u, t in enumerate(truth):
        if not len(t):
            continue
        top = np.argpartition(-s[u], k)[:k]
        top = top[np.argsort(-s[u, top], kind="stable")]
        vals.append(float((np.isin(top, t) * disc).sum() / disc[: min(k, len(t))].sum()))
    return float(np.mean(vals))


def precision_at_5(vectors: np.ndarray, labels: list[str]) -> float:
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.array(labels)
    top = np.argsort(-sim, axis=1)[:, :5]
    return float(np.mean(lab[top] == lab[:, None]))


def mfcc_stats(audio: list[np.ndarray]) -> np.ndarray:
    import librosa

    out = []
    for x in audio:
        m = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20)
        out.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return np.array(out, dtype=np.float32)


def logmel_cnn(args, audio, cfg, params, factors, target, n, report, unit_scaled, als, ridge):
    """The log-mel CNN (cnn.model.AudioCNN): trained, its two rows reported; (embeddings, history, front-end
    seconds, embedding seconds, epoch seconds, model)."""
    import torch  # noqa: F401 - the caller set its threads

    from cnn.model import AudioCNN
    from cnn.train import embed_mels, mels, train

    model = AudioCNN(cfg)
    t1 = time.perf_counter()
    mel = mels(model, audio, device=args.device)
    mel_s = time.perf_counter() - t1
    epoch_times = []
    last = [time.perf_counter()]

    def progress(epoch, tr_loss, v_loss, step, steps):
        if v_loss is not None:
            epoch_times.append(time.perf_counter() - last[0])
            last[0] = time.perf_counter()
            print(f"bench: epoch {epoch + 1}: train {tr_loss:.4f} validation {v_loss:.4f} ({epoch_times[-1]:.1f} s)",
                  file=sys.stderr)

    # every other track's audio (cold tracks included: a new song's audio is there, its plays are not)
    # takes part in the contrastive term only
    others = np.setdiff1d(np.arange(n), target)
    model, hist = train([mel[i] for i in target], factors[target], model, params, device=args.device, progress=progress,
                        unlabeled=[mel[i] for i in others] if args.contrastive else None)
    t1 = time.perf_counter()
    emb, pred = embed_mels(model, mel, device=args.device)
    embed_s = time.perf_counter() - t1
    pred = unit_scaled(pred)
    report("CNN on log-mel (predicted factors)", als.user_factors @ pred.T, best_epoch=hist.best_epoch + 1,
           val_loss=min(hist.val_loss), epoch_s=float(np.median(epoch_times)))
    # what `recommend fit` does with ingested embeddings: a ridge map from embedding to the ALS
    # factors of the current fit (the factor head belongs to the fit the CNN was trained on)
    report("CNN embedding + ridge onto the ALS factors (recommend fit)", ridge(emb))
    return emb, hist, mel_s, embed_s, epoch_times, model


def _msd_worker(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from analyzer.stages.musicnn import load_tagger
    from analyzer.stages.tagging import Tags
    from cnn.musicnn_head import tagger_output

    out = tagger_output(x, SR, tagger=load_tagger("msd"))
    return Tags(mtt=None, msd=out).embedding(), out.patch_pooled


def musicnn_outputs(audio: list[np.ndarray], jobs: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The MSD tagger on every track as the analysis runs it (22050 Hz in, resampled to 16 kHz by
    ``musicnn.at_front_rate``; the patches ``analyzer.stages.tagging`` reads: one per 15 s; one BLAS thread): (tracks x 200 default embeddings,
    per track its (patches, 1506) pooled mid-end features).  Kept in memory only."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawned workers: nothing of the parent's thread pools is inherited
    with ProcessPoolExecutor(max(1, jobs), mp_context=mp.get_context("spawn")) as ex:
        outs = list(ex.map(_msd_worker, audio, chunksize=16))
    return np.stack([e for e, _ in outs]).astype(np.float32), [p for _, p in outs]


def musicnn_head(base: str, inputs: list[np.ndarray], factors: np.ndarray, target: np.ndarray, params, seed: int) -> dict:
    """A `cnn.musicnn_head` head of ``base`` trained on the target tracks (cnn.train's loss, validation
    split and early stopping); its embeddings and predicted factors for every track."""
    import torch

    from cnn.musicnn_head import HeadConfig, build, predict, standardize_from
    from cnn.train import train

    torch.manual_seed(seed)
    cfg = HeadConfig(base=base, n_factors=factors.shape[1])
    model = build(cfg)
    tr = [inputs[i] for i in target]
    standardize_from(model, tr)
    t0 = time.perf_counter()
    model, hist = train(tr, factors[target], model, replace(params, crop_s=cfg.crop_s), device="cpu")
    train_s = time.perf_counter() - t0
    emb, pred = predict(model, inputs)
    print(f"bench: musicnn head ({base}): {len(hist.val_loss)} epochs, best {hist.best_epoch + 1}, validation "
          f"{min(hist.val_loss):.4f}, {train_s:.0f} s", file=sys.stderr)
    return {"emb": emb, "pred": pred, "hist": hist, "train_s": train_s, "model": model}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("ANALYZER_EVAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "eval"))
    ap.add_argument("--eval-dir", type=Path, default=default)
    ap.add_argument("--tracks", type=int, default=2000, help="music21 renders (cached after the first run)")
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=80, help="at most; early stopping on the validation split decides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--contrastive", type=float, default=0.5, help="weight of the two-crops contrastive term")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-input-norm", action="store_true", help="leave out the per-band input normalization")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--save", type=Path, help="also write the trained CNN here (safetensors)")
    ap.add_argument("--no-logmel-cnn", action="store_true",
                    help="leave out the log-mel CNN (its rows, P@5 and speed); the musicnn rows and baselines stay")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch

    from cnn.model import AudioCNN, CNNConfig, StatsModel, save
    from cnn.train import TrainParams, embed_mels, mels, train
    from recommender.models import ALS, ALSParams

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    names, audio, tokens, genre = load_corpus(args.eval_dir, args.tracks, args.jobs)
    n = len(names)
    print(f"bench: {n} tracks ({sum(g is not None for g in genre)} GTZAN) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t1 = time.perf_counter()
    mnn_emb, mnn_pooled = musicnn_outputs(audio, args.jobs)
    mnn_s = time.perf_counter() - t1
    print(f"bench: musicnn MSD tagger on {n} tracks in {mnn_s:.0f} s ({args.jobs} processes)", file=sys.stderr)
    plays = simulate_listeners(tokens, args.users, args.seed)
    rng = np.random.default_rng(args.seed)
    cold = np.zeros(n, dtype=bool)
    cold[rng.choice(n, size=int(round(0.2 * n)), replace=False)] = True
    pc = plays.tocoo()
    on_cold = cold[pc.col]
    # each listener's cold plays: half for the ceiling to learn from, half to score everyone on
    half = rng.random(len(pc.data)) < 0.5
    warm = sp.csr_matrix((pc.data[~on_cold], (pc.row[~on_cold], pc.col[~on_cold])), shape=plays.shape)
    seen_m = on_cold & half
    seen = sp.csr_matrix((pc.data[seen_m], (pc.row[seen_m], pc.col[seen_m])), shape=plays.shape)
    truth_m = on_cold & ~half
    truth = [np.sort(pc.col[truth_m & (pc.row == u)]) for u in range(plays.shape[0])]
    als_p = ALSParams(factors=32, regularization=1.0, alpha=5.0, weighting="log", iterations=15, seed=args.seed)
    t1 = time.perf_counter()
    als = ALS(als_p).fit(warm)
    als_s = time.perf_counter() - t1
    ceiling = ALS(als_p).fit((warm + seen).tocsr())
    rows = {}

    def report(name, scores, **extra):
        rows[name] = {"ndcg10": ndcg_cold(scores, cold, seen, truth), **extra}
        print(f"bench: {name}: NDCG@10 {rows[name]['ndcg10']:.4f}", file=sys.stderr)

    report("ALS ceiling (trained with half the cold plays)", ceiling.user_factors @ ceiling.item_factors.T)
    report("random", np.random.default_rng(args.seed + 5).random((plays.shape[0], n)))

    listeners = np.asarray((warm > 0).sum(axis=0)).ravel()
    # the training targets: warm tracks with enough listeners for their factors to mean something
    target = np.flatnonzero(~cold & (listeners >= 3))
    factors = als.item_factors
    scale = float(np.median(np.linalg.norm(factors[target], axis=1)))
    cfg = CNNConfig(n_factors=factors.shape[1], input_norm=not args.no_input_norm)
    params = TrainParams(crop_s=3.0, batch=32, epochs=args.epochs, lr=1e-3, seed=args.seed,
                         contrastive=args.contrastive)

    torch.set_num_threads(args.threads)
    from recommender.fit import place_cold_items

    def ridge(vectors):
        """`recommend fit`'s placement of the cold tracks from their audio vectors."""
        placed, _ = place_cold_items(factors, vectors, np.ones(n, dtype=bool), np.where(cold, 0, np.maximum(listeners, 0)))
        return als.user_factors @ placed.T

    def unit_scaled(pred):
        return scale * pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)

    # the MFCC baseline and the musicnn rows come before the log-mel CNN (the long part: a stopped run still
    # has them); the global torch generator is put back afterwards, so the CNN draws what it would alone
    rng_state = torch.get_rng_state()
    # the baseline: the same head on MFCC statistics
    t1 = time.perf_counter()
    stats = mfcc_stats(audio)
    mfcc_s = time.perf_counter() - t1
    base = StatsModel(stats.shape[1], cfg)
    base.mu.copy_(torch.from_numpy(stats[target].mean(0)))
    base.sd.copy_(torch.from_numpy(stats[target].std(0) + 1e-6))
    inputs = [s[:, None] for s in stats]
    base, bhist = train([inputs[i] for i in target], factors[target], base,
                        replace(params, epochs=max(args.epochs, 60), contrastive=0.0), device="cpu")
    with torch.no_grad():
        bemb, bpred = base.forward_mel(torch.from_numpy(stats[:, :, None]))
    bpred = bpred.numpy()
    bpred = scale * bpred / np.maximum(np.linalg.norm(bpred, axis=1, keepdims=True), 1e-12)
    report("MFCC mean/std + the same head (baseline)", als.user_factors @ bpred.T, best_epoch=bhist.best_epoch + 1,
           val_loss=min(bhist.val_loss))

    # musicnn: the analyzer's default embedding, untrained, through `recommend fit`'s ridge map; then the
    # two heads (each seeds torch itself)
    report("musicnn embedding + ridge onto the ALS factors (recommend fit, no training)", ridge(mnn_emb))
    head_params = replace(params, epochs=max(args.epochs, 60), contrastive=0.0)
    heads = {}
    for kind, label in (("embedding", "on top of the frozen musicnn embedding"),
                        ("backend", "musicnn back end fine-tuned from the MSD weights")):
        inputs = [e[:, None] for e in mnn_emb] if kind == "embedding" else [p.T.copy() for p in mnn_pooled]
        heads[kind] = musicnn_head(kind, inputs, factors, target, head_params, args.seed)
        h = heads[kind]
        report(f"head {label} (predicted factors)", als.user_factors @ unit_scaled(h["pred"]).T,
               best_epoch=h["hist"].best_epoch + 1, val_loss=min(h["hist"].val_loss), epochs=len(h["hist"].val_loss),
               train_s=h["train_s"])
        report(f"head {label}: embedding + ridge (recommend fit)", ridge(h["emb"]))
    torch.set_rng_state(rng_state)
    head_speed = measure_head_speed(args.eval_dir, {k: h["model"] for k, h in heads.items()})

    # GTZAN: do the embeddings group clips by genre (never a training signal)?
    gi = [i for i, g in enumerate(genre) if g is not None]
    labels = [genre[i] for i in gi]
    z = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
    p5 = {"MFCC statistics (standardized)": precision_at_5(z[gi], labels),
          "MFCC + head embedding": precision_at_5(bemb.numpy()[gi], labels),
          "musicnn embedding (the analyzer's default)": precision_at_5(mnn_emb[gi], labels),
          "head on top of the frozen musicnn embedding": precision_at_5(heads["embedding"]["emb"][gi], labels),
          "head with the fine-tuned musicnn back end": precision_at_5(heads["backend"]["emb"][gi], labels)}
    train_cost = {k: {"epochs": len(h["hist"].val_loss), "best_epoch": h["hist"].best_epoch + 1, "train_s": h["train_s"]}
                  for k, h in heads.items()}
    if args.json:  # what is measured so far, in case the log-mel CNN (the long part) is stopped
        args.json.write_text(json.dumps({"rows": rows, "p5": p5, "musicnn_speed": head_speed, "musicnn_tagger_s": mnn_s,
                                         "musicnn_training": train_cost, "logmel_cnn": "not yet"}, indent=1))

    emb = hist = None
    if not args.no_logmel_cnn:
        emb, hist, mel_s, embed_s, epoch_times, model = logmel_cnn(args, audio, cfg, params, factors, target, n,
                                                                   report, unit_scaled, als, ridge)

    if emb is not None:
        p5 = {"CNN embedding": precision_at_5(emb[gi], labels), **p5}

    # speed: the embedding beside a full analysis of the same GTZAN clips (30 s each)
    speed = None if emb is None else measure_speed(args.eval_dir, model, args.device)

    if args.save and emb is not None:
        save(model, args.save, training={"tracks": int(len(target)), "corpus": "music21 renders + GTZAN, simulated listeners",
                                         "als": als_p.__dict__, "epochs_run": len(hist.train_loss)},
             metrics={"cold_ndcg10": rows["CNN on log-mel (predicted factors)"]["ndcg10"], "gtzan_p5": p5["CNN embedding"]})

    ceiling_v = rows["ALS ceiling (trained with half the cold plays)"]["ndcg10"]
    print(f"## Cold start: audio CNN and musicnn ({datetime.date.today().isoformat()})")
    print()
    print(f"Command: `python -m bench.coldstart --tracks {args.tracks} --users {args.users} --epochs {args.epochs} "
          f"--contrastive {args.contrastive} --seed {args.seed}{' --no-logmel-cnn' if emb is None else ''}`. {n} tracks ({n - len(gi)} music21 renders of {CLIP_S:.0f} s, {len(gi)} GTZAN clips), "
          f"{args.users} simulated listeners, {plays.nnz} plays; {int(cold.sum())} cold tracks; the CNN trained on "
          f"{len(target)} warm tracks with >= 3 listeners (ALS {als_p.factors} factors, fitted in {als_s:.1f} s).")
    print()
    print("| method | NDCG@10 among cold tracks | share of the ALS ceiling | x random |")
    print("|---|---|---|---|")
    rnd = rows["random"]["ndcg10"]
    for name, r in rows.items():
        print(f"| {name} | {r['ndcg10']:.4f} | {r['ndcg10'] / ceiling_v:.2f} | {r['ndcg10'] / rnd:.1f} |")
    print()
    print("| GTZAN genre precision@5 (49 clips, leave one out) | |")
    print("|---|---|")
    for k, v in p5.items():
        print(f"| {k} | {v:.3f} |")
    print()
    if emb is not None:
        cnn_row = rows["CNN on log-mel (predicted factors)"]
        print(f"Training ({args.device}): {len(hist.train_loss)} epochs, best {cnn_row['best_epoch']}, median "
              f"{cnn_row['epoch_s']:.1f} s per epoch of {len(target) - int(round(0.2 * len(target)))} tracks; "
              f"log-mel front end for all {n} tracks {mel_s:.1f} s, embedding them {embed_s:.1f} s "
              f"({n / max(embed_s, 1e-9):.0f} tracks/s); MFCC statistics {mfcc_s:.1f} s.")
        print(f"Speed on {speed['files']} GTZAN clips (30 s): analysis {speed['analysis_s']:.2f} s/clip, embedding "
              f"(decoded audio -> vector) {speed['embed_s']:.3f} s/clip = {100 * speed['embed_s'] / speed['analysis_s']:.1f} % "
              f"of the analysis.")
    print(f"musicnn: the MSD tagger on all {n} tracks {mnn_s:.0f} s ({args.jobs} processes); heads trained "
          + "; ".join(f"{k}: {len(h['hist'].val_loss)} epochs (best {h['hist'].best_epoch + 1}) in {h['train_s']:.1f} s"
                      for k, h in heads.items())
          + f". Per GTZAN clip (30 s, {head_speed['files']} clips): the MSD tagger alone {head_speed['tagger_s']:.3f} s; "
          + ", ".join(f"head ({k}) given its output {v:.4f} s" for k, v in head_speed["head_s"].items()) + ".")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "p5": p5, "speed": speed, "musicnn_speed": head_speed,
                                         "musicnn_tagger_s": mnn_s, "musicnn_training": train_cost,
                                         "epochs": None if hist is None else len(hist.train_loss),
                                         "logmel_cnn": emb is not None}, indent=1))
    return 0


def measure_head_speed(eval_dir: Path, heads: dict, files: int = 6) -> dict:
    """Seconds per 30 s GTZAN clip: the MSD tagger alone (what a head's embedder pays when the analysis
    does not hand it the tagger's output) and each head given that output."""
    from analyzer.stages.audio import decode
    from analyzer.stages.musicnn import load_tagger
    from cnn.musicnn_head import features, predict, tagger_output

    paths = sorted((eval_dir / "gtzan").glob("*.flac"))[::8][:files]
    msd = load_tagger("msd")
    first = decode(paths[0])
    out = tagger_output(first.samples, first.sr, tagger=msd)  # warm up
    for model in heads.values():
        predict(model, [features(out, model.cfg.base)])
    t_tag, t_head = 0.0, dict.fromkeys(heads, 0.0)
    for p in paths:
        audio = decode(p)
        t0 = time.perf_counter()
        out = tagger_output(audio.samples, audio.sr, tagger=msd)
        t_tag += time.perf_counter() - t0
        for k, model in heads.items():
            t0 = time.perf_counter()
            predict(model, [features(out, model.cfg.base)])
            t_head[k] += time.perf_counter() - t0
    return {"files": len(paths), "tagger_s": t_tag / len(paths), "head_s": {k: v / len(paths) for k, v in t_head.items()}}


def measure_speed(eval_dir: Path, model, device: str, files: int = 6) -> dict:
    from analyzer.stages.audio import decode
    from analyzer.stages.features import Models
    from analyzer.pipeline import analyze
    from cnn.train import embed

    paths = sorted((eval_dir / "gtzan").glob("*.flac"))[::8][:files]
    models = Models()
    a_s = e_s = 0.0
    analyze(decode(paths[0]), models=models)  # warm up: first-call costs are not per-file costs
    embed(model, decode(paths[0]).samples, device=device)
    for p in paths:
        audio = decode(p)
        t0 = time.perf_counter()
        analyze(audio, models=models)
        t1 = time.perf_counter()
        embed(model, audio.samples, device=device)
        t2 = time.perf_counter()
        a_s += t1 - t0
        e_s += t2 - t1
    return {"files": len(paths), "analysis_s": a_s / len(paths), "embed_s": e_s / len(paths)}


if __name__ == "__main__":
    sys.exit(main())
