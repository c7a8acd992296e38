"""Batch throughput on Spark (local[1], local[2]) beside the local engine (--jobs 1, --jobs 2), and Spark's overhead.

    python -m bench.spark_speed [--clips 8] [--eval-dir DIR] [--json bench/spark_speed.json]

Inputs: the first ``--clips`` GTZAN clips (30 s each, sorted by name), copied to a scratch folder.  Each
configuration is ``analyze DIR -o OUT --force`` in a fresh process, as a user runs it: the wall time from
the parent includes the interpreter, imports, model loading (once per worker) and, for Spark, the session
start-up.  Spark's overhead is measured apart, in this process: the session start-up, and the per-file cost
of the engine's tasks with nothing to analyse (one Spark job per file that reads the file's bytes through
``binaryFiles`` and returns its length).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .run import REPO_ROOT, machine_text, resolve_eval_dir

CONFIGS = (
    ("local engine, --jobs 1", ["--jobs", "1"]),
    ("local engine, --jobs 2", ["--jobs", "2"]),
    ("spark local[1]", ["--engine", "spark", "--spark-master", "local[1]"]),
    ("spark local[2]", ["--engine", "spark", "--spark-master", "local[2]"]),
)
SUMMARY = re.compile(r"(\d+) analyzed, (\d+) failed.*?([\d.]+) h of audio in ([\d.]+) s")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


def run_config(args: list[str], folder: Path, out: Path) -> dict:
    """One batch in a fresh process: wall time, the summary's figures."""
    cmd = [sys.executable, "-m", "analyzer.cli", str(folder), "-o", str(out), "--force", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    m = SUMMARY.search(proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"analyzed": int(m.group(1)), "audio_s": float(m.group(3)) * 3600, "batch_s": float(m.group(4)),
            "wall_s": wall}


def spark_overhead(folder: Path) -> dict:
    """Session start-up, and the engine's per-file job cost with no analysis (local[2])."""
    from analyzer.run.spark_engine import source_uri, start_session

    os.environ.update({k: v for k, v in _env().items() if k in ("PYTHONPATH", "PYSPARK_PYTHON")})
    t0 = time.perf_counter()
    spark, _ = start_session("local[2]", "spark-speed")
    start_s = time.perf_counter() - t0
    sc = spark.sparkContext
    files = sorted(folder.iterdir())
    try:
        sc.binaryFiles(source_uri(files[0])).map(lambda kv: len(kv[1])).collect()  # workers started
        t0 = time.perf_counter()
        for f in files:
            sc.binaryFiles(source_uri(f)).map(lambda kv: len(kv[1])).collect()
        per_job_s = (time.perf_counter() - t0) / len(files)
    finally:
        spark.stop()
    return {"session_start_s": start_s, "per_file_job_s": per_job_s}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--eval-dir", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    gtzan = resolve_eval_dir(a.eval_dir) / "gtzan"
    clips = sorted(gtzan.glob("*.flac"))[: a.clips]
    if not clips:
        raise SystemExit(f"no GTZAN clips under {gtzan} (set --eval-dir or ANALYZER_EVAL_DIR)")
    results = {"machine": machine_text(), "clips": [c.name for c in clips], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for c in clips:
            shutil.copy2(c, folder / c.name)
        for name, args in CONFIGS:
            r = run_config(args, folder, Path(tmp) / "out")
            r["files_per_min"] = 60 * r["analyzed"] / r["wall_s"]
            r["realtime"] = r["audio_s"] / r["wall_s"]
            results["runs"][name] = r
            print(f"{name:24s} wall {r['wall_s']:6.1f} s  batch {r['batch_s']:6.1f} s  "
                  f"{r['files_per_min']:5.1f} files/min  {r['realtime']:5.1f}x realtime", flush=True)
        results["spark_overhead"] = spark_overhead(folder)
        print(f"spark session start {results['spark_overhead']['session_start_s']:.1f} s, "
              f"per-file job without analysis {1000 * results['spark_overhead']['per_file_job_s']:.0f} ms")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
