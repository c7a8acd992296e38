"""`cnn`: Typer only. Train the audio CNN on a recommender model's items, or embed files with it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from analyzer.errors import AnalyzerError, InputError, run_app

EXIT_INPUT = 1
# --base: the log-mel CNN (None), or a cnn.musicnn_head base.  bench.coldstart measured both musicnn ways
# (RESULTS.md, "Cold start from the musicnn embedding", 2026-11-30): the back end fine-tuned from the MSD
# weights had the lower validation loss (0.884 vs 0.982) and ranked cold tracks better (NDCG@10 0.1834 vs
# 0.1712 on top of the frozen embedding), so `musicnn` is that one
BASES = {"logmel": None, "musicnn": "backend"}
MUSICNN_BASE_HELP = ("its back end (dense 200 and batch norms) fine-tuned from the MSD weights with the head, its "
                     "convolutions frozen")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="The audio CNN: learns to predict a recommender model's item factors from audio, so songs "
                       "nobody has played yet can be placed among the ones people play.")


def _err(msg: str) -> None:
    sys.stderr.write(f"error: {msg}\n")


def _audio_files(folder: Path) -> list[Path]:
    from analyzer.run.batch import AUDIO_EXTENSIONS

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file()
                  and not any(p.startswith(".") for p in f.relative_to(folder).parts))


@app.command("train", help="Learn audio -> item factors on the model's items that have plays and audio in AUDIO "
             "(files named by item id, as `recommend ingest --id path` names them).  Resumes from its checkpoint.")
def train_command(
    audio: Annotated[Path, typer.Argument(help="Folder of audio files named by item id.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="A fitted recommend model folder.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the CNN (default: "
                                                "MODEL/cnn.safetensors).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="At most; early stopping on the validation split decides.")] = 80,
    batch: Annotated[int, typer.Option("--batch")] = 32,
    crop: Annotated[float, typer.Option("--crop", help="Training crop, seconds.")] = 3.0,
    min_listeners: Annotated[int, typer.Option("--min-listeners", help="Train on items with at least this many "
                                               "listeners (fewer: their factors are mostly noise).")] = 3,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help="Decode at most this much of each file.")] = 120.0,
    contrastive: Annotated[float, typer.Option("--contrastive", help="Weight of the self-supervised term (two crops "
                                               "of one track close, of different tracks apart); every other "
                                               "audio file in AUDIO takes part in it. 0: off.")] = 0.5,
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda where a GPU exists.")] = "cpu",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    base: Annotated[str, typer.Option("--base", help="What the model learns from: logmel (the log-mel CNN, trained "
                                      "from scratch) or musicnn (a factor head on the analyzer's musicnn MSD tagger, "
                                      f"{MUSICNN_BASE_HELP}; --crop and --contrastive do not apply).")] = "logmel",
) -> None:
    import torch
    from analyzer.console import progress_bar

    from analyzer.stages.audio import DecodeParams, decode
    from recommender.persist import load as load_recommender
    from recommender.store import Store

    from .model import AudioCNN, CNNConfig, save
    from .train import TrainParams, mels, train

    # written so that NaN (which fails every comparison) and infinity are refused too
    if epochs < 1 or batch < 1 or not (0 < crop < float("inf") and 0 < max_seconds < float("inf")
                                       and 0 <= contrastive < float("inf")):
        raise typer.BadParameter("--epochs and --batch must be >= 1, --crop and --max-seconds finite and > 0, "
                                 "--contrastive finite and >= 0")
    if base not in BASES:
        raise typer.BadParameter(f"--base must be one of {', '.join(BASES)}, got {base!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device on this machine")
    st = Store(model)
    version = st.current()
    rec = load_recommender(version)
    index = {item: i for i, item in enumerate(rec.data.items)}
    listeners = rec.listeners
    every = _audio_files(audio)
    files = [f for f in every if f.stem in index and listeners[index[f.stem]] >= min_listeners]
    targets = set(files)
    extra = [f for f in every if f not in targets] if contrastive else []
    if len(files) < 10:
        raise InputError(f"{audio}: {len(files)} audio files named after items with >= {min_listeners} listeners "
                         f"in {model}; at least 10 are needed")
    out = out or model / "cnn.safetensors"
    if BASES[base] is not None:
        _train_musicnn(BASES[base], files, index, rec.als.item_factors, out, epochs=epochs, batch=batch,
                       max_seconds=max_seconds, seed=seed, model=model, version=version.name, min_listeners=min_listeners)
        return
    cfg = CNNConfig(n_factors=rec.als.item_factors.shape[1])
    torch.manual_seed(seed)
    net = AudioCNN(cfg)
    spectra, rows, unlabeled, skipped = [], [], [], 0
    with progress_bar("decoding") as bar:
        task = bar.add_task("", total=len(files) + len(extra))
        for k, f in enumerate(files + extra):
            try:
                a = decode(f, params=DecodeParams(duration_s=max_seconds))
                m = mels(net, [a.samples], device=device)[0]
                if k < len(files):
                    spectra.append(m)
                    rows.append(index[f.stem])
                else:
                    unlabeled.append(m)
            except AnalyzerError as exc:
                skipped += 1
                sys.stderr.write(f"warning: {exc}\n")
            bar.advance(task)
        factors = rec.als.item_factors[rows]
        params = TrainParams(crop_s=crop, batch=batch, epochs=epochs, seed=seed, contrastive=contrastive)
        t0 = time.perf_counter()
        ckpt = out.with_name(out.name + ".ckpt")
        steps = max(1, -(-int(round(len(rows) * (1 - params.val_share))) // batch))
        net, hist = train(spectra, factors, net, params, unlabeled=unlabeled, device=device,
                          progress=_epoch_progress(bar, epochs * steps), checkpoint=ckpt)
    training = {"tracks": len(rows), "unlabeled_tracks": len(unlabeled), "skipped": skipped, "model": str(model), "version": version.name,
                "min_listeners": min_listeners, "epochs_run": len(hist.train_loss), "best_epoch": hist.best_epoch + 1,
                "params": params.__dict__, "seconds": round(time.perf_counter() - t0, 1)}
    save(net, out, training=training, metrics={"val_loss": min(hist.val_loss) if hist.val_loss else None,
                                               "train_loss": hist.train_loss[hist.best_epoch] if hist.val_loss else None})
    ckpt.unlink(missing_ok=True)
    sys.stderr.write(f"cnn: {out} trained on {len(rows)} tracks, {len(hist.train_loss)} epochs (best {hist.best_epoch + 1}, "
                     f"validation loss {min(hist.val_loss):.4f}) in {training['seconds']} s\n")


def _epoch_progress(bar, total_steps: int):
    """A `cnn.train.train` progress callback that moves a new task of `bar` (epoch, losses)."""
    task = bar.add_task("epoch 1", total=total_steps)

    def progress(epoch, tr_loss, v_loss, step, n_steps):
        bar.update(task, completed=epoch * n_steps + step,
                   description=f"epoch {epoch + 1}: loss {tr_loss:.3f}" + (f" val {v_loss:.3f}" if v_loss is not None else ""))

    return progress


def _train_musicnn(head_base: str, files: list[Path], index: dict, item_factors, out: Path, *, epochs: int, batch: int,
                   max_seconds: float, seed: int, model: Path, version: str, min_listeners: int) -> None:
    """`cnn train --base musicnn`: the MSD tagger once per file, then the head (cnn.musicnn_head) trained
    with cnn.train's loss, validation split and early stopping; written as safetensors."""
    import numpy as np
    import torch
    from analyzer.console import progress_bar

    from analyzer.stages.audio import DecodeParams, decode
    from analyzer.stages.musicnn import load_tagger

    from . import musicnn_head as mh
    from .train import TrainParams, train

    msd = load_tagger("msd")
    inputs, rows, skipped = [], [], 0
    with progress_bar("musicnn") as bar:
        task = bar.add_task("", total=len(files))
        for f in files:
            try:
                a = decode(f, params=DecodeParams(duration_s=max_seconds))
                x = mh.features(mh.tagger_output(a.samples, a.sr, tagger=msd), head_base)
                if x is None:
                    raise InputError(f"{f}: shorter than one musicnn patch (3 s)")
                inputs.append(x)
                rows.append(index[f.stem])
            except AnalyzerError as exc:
                skipped += 1
                sys.stderr.write(f"warning: {exc}\n")
            bar.advance(task)
        if len(rows) < 10:
            raise InputError(f"{len(rows)} files could be read by the musicnn tagger; at least 10 are needed")
        factors = item_factors[rows]
        torch.manual_seed(seed)
        cfg = mh.HeadConfig(base=head_base, n_factors=item_factors.shape[1])
        net = mh.build(cfg, tagger=msd)
        n_val = int(round(TrainParams().val_share * len(rows)))
        # standardised with the tracks it trains on (the validation split's are not seen before it scores)
        order = np.random.default_rng(seed).permutation(len(rows))
        mh.standardize_from(net, [inputs[i] for i in order[n_val:]])
        params = TrainParams(crop_s=cfg.crop_s, batch=batch, epochs=epochs, seed=seed, contrastive=0.0)
        t0 = time.perf_counter()
        ckpt = out.with_name(out.name + ".ckpt")
        steps = max(1, -(-(len(rows) - n_val) // batch))
        net, hist = train(inputs, factors, net, params, progress=_epoch_progress(bar, epochs * steps), checkpoint=ckpt)
    training = {"tracks": len(rows), "skipped": skipped, "model": str(model), "version": version,
                "min_listeners": min_listeners, "epochs_run": len(hist.train_loss), "best_epoch": hist.best_epoch + 1,
                "params": params.__dict__, "seconds": round(time.perf_counter() - t0, 1)}
    mh.save(net, out, training=training, metrics={"val_loss": min(hist.val_loss) if hist.val_loss else None})
    ckpt.unlink(missing_ok=True)
    sys.stderr.write(f"cnn: {out} ({cfg.base} head on musicnn) trained on {len(rows)} tracks, {len(hist.train_loss)} "
                     f"epochs (best {hist.best_epoch + 1}, validation loss {min(hist.val_loss):.4f}) in "
                     f"{training['seconds']} s\n")


@app.command("embed", help="Print each file's embedding as JSON lines: {\"file\": ..., \"embedding\": [...]}.")
def embed_command(
    files: Annotated[list[Path], typer.Argument(help="Audio files.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The CNN (.safetensors).")],
    device: Annotated[str, typer.Option("--device")] = "cpu",
) -> None:
    import orjson

    from analyzer.stages.audio import decode

    from .embedder import load as load_embedder

    net = load_embedder(model, device=device)
    model_id = net.model_id
    bad = 0
    for f in files:
        try:
            audio = decode(f)
            v = net.embed(audio.samples, audio.sr)
        except AnalyzerError as exc:
            _err(str(exc))
            bad += 1
            continue
        sys.stdout.buffer.write(orjson.dumps({"file": str(f), "embedding_model": model_id,
                                              "embedding": [round(float(x), 6) for x in v]}) + b"\n")
    if bad:
        raise typer.Exit(EXIT_INPUT)


def main() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        sys.stderr.write("error: the cnn commands need torch: pip install 'echonest-analyzer[cnn]'\n")
        raise SystemExit(2)
    run_app(app, interrupted="interrupted (rerun the same command to continue from the last epoch)")


if __name__ == "__main__":
    main()
