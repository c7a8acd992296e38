"""Speed as a user meets it: fresh processes and warm ones, short clips to an hour, beside Essentia and madmom.

    python -m bench.speed [--lengths 30,204,600,3600] [--json bench/speed.json]

Inputs: a 30 s GTZAN clip, "Fancy" (204 s mp3, the Echo Nest pair), and 10- and 60-minute files joined
from the GTZAN clips (``bench/.cache/speed/``, never committed).  For each, in one run:

* **cold**: ``analyze FILE`` in a fresh Python process, as a user runs it (imports, model loading,
  decoding, analysis, the validated document on stdout): wall time from the parent, peak resident size
  (VmHWM) from the child itself;
* **warm**: the same analysis in a process that has already analysed another file (models loaded,
  JIT caches warm), as each file after the first of a batch runs;
* **anchors**, each in its own fresh process on the same file: Essentia's ``MusicExtractor`` (the
  whole-track descriptor extractor) and madmom's beat + downbeat processors (``RNNBeatProcessor`` +
  ``DBNBeatTrackingProcessor``, ``RNNDownBeatProcessor`` + ``DBNDownBeatTrackingProcessor``) on madmom's
  own file reading; a process over ``--anchor-memory-gb`` is stopped by its address-space limit and
  reported as such rather than taking the machine down.

Every process is limited to one BLAS/OpenMP thread (as a batch worker runs), so the figures are per core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .longfile import peak_rss_mb
from .run import REPO_ROOT, machine_text, resolve_eval_dir
from .truth import bench_cache_dir

SR = 22050
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def inputs(eval_dir: Path, cache: Path, lengths_s: list[int]) -> dict[int, Path]:
    """length (s) -> an audio file that long: a GTZAN clip, Fancy, or GTZAN clips joined (cached)."""
    import numpy as np
    import soundfile as sf

    clips = sorted((eval_dir / "gtzan").glob("*.flac"))
    fancy = eval_dir / "echonest-pairs" / "fancy" / "fancy.mp3"
    out = {}
    decoded: list | None = None  # the clips' samples, decoded once for every joined length
    for n in lengths_s:
        if n <= 30:
            out[n] = clips[0]
        elif n == 204 and fancy.is_file():
            out[n] = fancy
        else:
            path = cache / f"joined-{n}s.flac"
            if not path.exists():
                from analyzer.stages.audio import decode

                if decoded is None:
                    decoded = [decode(c).samples for c in clips]
                # the clips in order, repeated as often as the length needs
                reps = -(-n * SR // sum(len(x) for x in decoded))
                parts = decoded * reps
                cache.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.flac")
                sf.write(tmp, np.concatenate(parts)[: n * SR], SR, subtype="PCM_16")
                os.replace(tmp, path)
            out[n] = path
    return out


def child(kind: str, path: Path, warm_path: Path | None) -> dict:
    """Run one measurement in this (fresh) process; its figures as a dict."""
    t0 = time.perf_counter()
    if kind == "cold":
        # the CLI itself, its document written to /dev/null
        import contextlib

        from analyzer.cli import main

        sys.argv = ["analyze", str(path)]
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            try:
                main()
            except SystemExit as exc:
                if exc.code:
                    raise RuntimeError(f"analyze exited {exc.code}") from None
        return {"inside_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
    if kind == "warm":
        from analyzer.stages.audio import decode
        from analyzer.document import build_document
        from analyzer.stages.features import Models
        from analyzer.pipeline import analyze

        models = Models()
        analyze(decode(warm_path), models=models)
        t1 = time.perf_counter()
        audio = decode(path)
        build_document(analyze(audio, models=models), timestamp=0, analysis_time_s=0.0)
        return {"warm_s": time.perf_counter() - t1, "peak_rss_mb": peak_rss_mb()}
    if kind == "essentia":
        import essentia
        import essentia.standard as es

        essentia.log.infoActive = essentia.log.warningActive = False
        es.MusicExtractor()(str(path))
        return {"inside_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
    if kind == "madmom":
        from analyzer.stages.features import configure_onnxruntime

        configure_onnxruntime()  # single-threaded, non-spinning sessions, as ours run
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        DBNBeatTrackingProcessor(fps=100)(RNNBeatProcessor()(str(path)))
        DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(RNNDownBeatProcessor()(str(path)))
        return {"inside_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
    raise ValueError(kind)


def measure(kind: str, path: Path, warm_path: Path, memory_gb: float) -> dict:
    """One fresh process for ``kind`` on ``path``: wall time seen from here and the child's own figures."""
    def limit() -> None:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **ONE_THREAD)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.speed", "--child", kind, "--audio", str(path), "--warm-audio", str(warm_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, preexec_fn=limit,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        memory = "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr or proc.returncode < 0
        return {"error": f"over {memory_gb:g} GB" if memory else last[:200], "wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def audio_seconds(path: Path) -> float:
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except RuntimeError:
        from analyzer.stages.audio import decode

        return decode(path).duration_s


def report(rows: list[dict]) -> str:
    """The markdown table: per input, each system's wall, realtime factor and peak RSS."""
    lines = ["| input | system | wall s | realtime | peak RSS MB |", "|---|---|---|---|---|"]
    for r in rows:
        for name in ("cold", "warm", "essentia", "madmom"):
            m = r.get(name)
            if m is None:
                continue
            if "error" in m:
                lines.append(f"| {r['label']} | {name} | – | – | {m['error']} |")
                continue
            secs = m.get("warm_s", m["wall_s"])
            lines.append(f"| {r['label']} | {name} | {secs:.1f} | {r['audio_s'] / secs:.1f}x | "
                         f"{m['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=None)
    p.add_argument("--lengths", default="30,204,600,3600", help="input lengths in seconds")
    p.add_argument("--anchors", default="essentia,madmom", help="which anchors to run ('' for none)")
    p.add_argument("--anchor-memory-gb", type=float, default=12.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--audio", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--warm-audio", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.audio, args.warm_audio)))
        return 0
    eval_dir = resolve_eval_dir(args.eval_dir)
    if not (eval_dir / "gtzan").is_dir():
        print(f"bench.speed: no GTZAN clips under {eval_dir}; skipping", file=sys.stderr)
        return 2
    files = inputs(eval_dir, bench_cache_dir() / "speed", [int(x) for x in args.lengths.split(",")])
    warm_path = sorted((eval_dir / "gtzan").glob("*.flac"))[1]
    anchors = [a for a in args.anchors.split(",") if a]
    rows = []
    t0 = time.perf_counter()
    for n, path in files.items():
        row = {"label": f"{path.name} ({n} s)", "audio_s": audio_seconds(path)}
        for kind in ["cold", "warm", *anchors]:
            row[kind] = measure(kind, path, warm_path, args.anchor_memory_gb if kind in anchors else 64.0)
            print(f"bench.speed: {row['label']} {kind}: {row[kind]}", file=sys.stderr, flush=True)
        rows.append(row)
    text = (f"Run {time.strftime('%Y-%m-%d')} on {machine_text()}, one thread per process; "
            f"{time.perf_counter() - t0:.0f} s in all.\n\n" + report(rows))
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": machine_text()}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
