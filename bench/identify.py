"""Identification bench: index every recording of the eval corpus, then query degraded 10 s clips.

    python -m bench.identify [--clips-per-track 2] [--json bench/identify.json]

Queries go through the same code as `analyze identify` (decode an mp3 file, echoprint codes,
SQLite look-up).  Conditions: `mp3` (a 10 s excerpt from anywhere in the track re-encoded to
64 kbps mp3), `noise` (white noise at 10 dB SNR added first), and `unknown` (clips of
music21 renders that are not in the catalog: any reported match is a false one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analyzer.stages.audio import ANALYSIS_SR, decode
from analyzer.run.batch import AUDIO_EXTENSIONS
from analyzer.library.catalog import Catalog, MatchParams, file_codes
from analyzer.stages.fingerprint import CODE_UNIT_S

CLIP_S = 10.0
KBPS = 64
SNR_DB = 10.0


def eval_tracks(eval_dir: Path) -> list[Path]:
    out = []
    for sub in ("gtzan", "renders", "recordings"):
        out += sorted(p for p in (eval_dir / sub).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return out


def to_mp3(x: np.ndarray, sr: int, path: Path) -> None:
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "-",
           "-b:a", f"{KBPS}k", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(x, dtype="<f4").tobytes(), check=True)


def clip_of(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    n = int(CLIP_S * sr)
    if len(x) <= n:
        return x, 0.0
    start = int(rng.integers(0, len(x) - n))
    return x[start : start + n], start / sr


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    y = x + noise
    return y / max(1.0, float(np.max(np.abs(y))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=Path(os.environ.get("ANALYZER_EVAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "eval")))
    ap.add_argument("--clips-per-track", type=int, default=2)
    ap.add_argument("--unknown-clips", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.eval_dir.is_dir():
        print(f"bench: no eval corpus at {args.eval_dir}: nothing to measure", file=sys.stderr)
        return 2
    from bench.m21 import render_all

    tracks = eval_tracks(args.eval_dir)
    unknown = render_all()
    rng = np.random.default_rng(args.seed)
    params = MatchParams()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db = tmp / "catalog.db"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "analyzer.cli", "index", *map(str, tracks), "--db", str(db)],
                              capture_output=True, text=True)
        index_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        catalog = Catalog(db)
        n_tracks, n_codes = catalog.count()
        indexed_audio_s = sum(r[0] for r in catalog.db.execute("SELECT duration_s FROM tracks"))
        print(f"bench: indexed {n_tracks} tracks ({indexed_audio_s / 60:.1f} min, {n_codes} codes) in {index_s:.1f} s "
              f"(one `analyze index` call, 2 workers, imports included)")

        records = []

        def query(x: np.ndarray, sr: int, condition: str, truth: str | None, where_s: float, split: str) -> None:
            q = tmp / "query.mp3"
            to_mp3(x, sr, q)
            t1 = time.perf_counter()
            fc = file_codes(q, query=True)
            fp_s = time.perf_counter() - t1
            res = catalog.lookup(fc.times, fc.codes, fc.chroma, unit_s=CODE_UNIT_S, params=params)
            top = res.matches[0] if res.matches else None
            second = res.matches[1].score if len(res.matches) > 1 else 0
            records.append({
                "condition": condition, "split": split, "truth": truth, "clip_start_s": round(where_s, 2),
                "top": top.path if top else None, "top_score": top.score if top else 0, "second_score": second,
                "top_share": top.share if top else 0.0, "top_ber": top.ber if top else 1.0,
                "second_ber": res.matches[1].ber if len(res.matches) > 1 else 1.0, "matched": bool(top and top.matched),
                "correct": bool(top and top.matched and truth is not None and Path(top.path) == Path(truth).resolve()),
                "top1_any": bool(top and truth is not None and Path(top.path) == Path(truth).resolve()),
                "offset_err_s": (abs(top.offset_s - where_s) if top and truth else None),
                "codes": res.n_query_codes, "lookup_ms": res.lookup_s * 1000, "decode_fp_ms": fp_s * 1000,
            })

        for i, path in enumerate(tracks):
            x = decode(path, sr=ANALYSIS_SR).samples
            split = "dev" if i % 2 == 0 else "heldout"
            for _ in range(args.clips_per_track):
                c, where = clip_of(x, ANALYSIS_SR, rng)
                query(c, ANALYSIS_SR, "mp3", str(path), where, split)
                query(add_noise(c, SNR_DB, rng), ANALYSIS_SR, "noise", str(path), where, split)
            print(f"bench: identify {i + 1}/{len(tracks)} {path.name}", file=sys.stderr)
        per_piece = max(1, -(-args.unknown_clips // max(1, len(unknown))))
        n = 0
        for j, path in enumerate(unknown):
            x = decode(path, sr=ANALYSIS_SR).samples
            for _ in range(per_piece):
                if n >= args.unknown_clips:
                    break
                c, where = clip_of(x, ANALYSIS_SR, rng)
                query(c, ANALYSIS_SR, "unknown", None, where, "dev" if j % 2 == 0 else "heldout")
                n += 1
        catalog.close()

    print_report(records, n_tracks=n_tracks, n_codes=n_codes, index_s=index_s, indexed_audio_s=indexed_audio_s,
                 params=params)
    if args.json:
        args.json.write_text(json.dumps({"records": records, "index_s": index_s, "tracks": n_tracks, "codes": n_codes}, indent=1))
    return 0


def print_report(records, *, n_tracks, n_codes, index_s, indexed_audio_s, params: MatchParams) -> None:
    import datetime

    print(f"## Identification ({datetime.date.today().isoformat()})")
    print()
    print(f"Command: `python -m bench.identify`. Catalog: every recording in the eval corpus ({n_tracks} tracks, "
          f"{indexed_audio_s / 60:.1f} min, {n_codes} codes), indexed in {index_s:.1f} s. Queries: {CLIP_S:.0f} s "
          f"excerpts from anywhere in a track, re-encoded to {KBPS} kbps mp3 (`noise`: white noise at {SNR_DB:.0f} dB "
          f"SNR added first); `unknown`: excerpts of music21 renders not in the catalog. A match is reported when "
          f"one of the {params.candidates} tracks with the most echoprint codes aligned at one offset has chromaprint bit "
          f"error rate <= {params.max_ber} at that offset (+-{params.verify_reach_items} items of 0.124 s).")
    print()
    print("| condition | split | queries | top-1 (reported match, right track) | best candidate right | false matches | median echoprint score | median BER of the top | max BER of a right match / min BER of an unknown |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cond in ("mp3", "noise", "unknown"):
        for split in ("dev", "heldout", "all"):
            rs = [r for r in records if r["condition"] == cond and (split == "all" or r["split"] == split)]
            if not rs:
                continue
            if cond == "unknown":
                false = sum(r["matched"] for r in rs)
                print(f"| {cond} | {split} | {len(rs)} | – | – | {false} | {np.median([r['top_score'] for r in rs]):.0f} | "
                      f"{np.median([r['top_ber'] for r in rs]):.3f} | {min(r['top_ber'] for r in rs):.3f} |")
            else:
                false = sum(r["matched"] and not r["correct"] for r in rs)
                print(f"| {cond} | {split} | {len(rs)} | {np.mean([r['correct'] for r in rs]):.3f} | "
                      f"{np.mean([r['top1_any'] for r in rs]):.3f} | {false} | {np.median([r['top_score'] for r in rs]):.0f} | "
                      f"{np.median([r['top_ber'] for r in rs]):.3f} | "
                      f"{max([r['top_ber'] for r in rs if r['correct']] or [float('nan')]):.3f} |")
    look = np.array([r["lookup_ms"] for r in records])
    fp = np.array([r["decode_fp_ms"] for r in records])
    offs = [r["offset_err_s"] for r in records if r["correct"] and r["offset_err_s"] is not None]
    print()
    print(f"Look-up (SQLite query + offset histogram): mean {look.mean():.1f} ms, p95 {np.percentile(look, 95):.1f} ms, "
          f"max {look.max():.1f} ms over {len(look)} queries. Decoding the 10 s mp3 + codes: mean {fp.mean():.0f} ms. "
          f"Offset of right matches: median error {np.median(offs) * 1000:.0f} ms, max {max(offs) * 1000:.0f} ms.")
    misses = [r for r in records if r["condition"] != "unknown" and not r["correct"]]
    for r in misses:
        print(f"- miss: {r['condition']} {Path(r['truth']).name} @ {r['clip_start_s']} s: top {Path(r['top']).name if r['top'] else None} "
              f"score {r['top_score']} BER {r['top_ber']:.3f} (runner-up score {r['second_score']}, {r['codes']} codes)")


if __name__ == "__main__":
    sys.exit(main())
