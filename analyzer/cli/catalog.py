"""`analyze index` and `analyze identify`: the identification catalog."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from analyzer.console import progress_bar
from analyzer.errors import AnalyzerError, one_line, quote_path
from analyzer.cli.common import (
    _err, _warn, _say, _stopped, _finite, _usage, _or_exit, _cores, EXIT_OK, EXIT_INPUT, catalog_app,
)


@catalog_app.command("index", help="Fingerprint every audio file under DIRS into a SQLite catalog (added or updated; "
                     "files already indexed and unchanged are skipped).")
def index_command(
    dirs: Annotated[list[Path], typer.Argument(help="Audio files or folders (searched recursively).", show_default=False)],
    db: Annotated[Path, typer.Option("--db", help="The catalog file (created if missing).")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: number of cores).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Re-fingerprint files already in the catalog.")] = False,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Refuse files longer than this many seconds.")
    ] = 3600.0,
) -> None:
    from rich.console import Console

    from analyzer.stages.audio import DecodeParams
    from analyzer.run.batch import collect_inputs
    from analyzer.library.catalog import Catalog
    from analyzer.run.workers import WorkerFailure

    _finite(max_duration=max_duration)
    if jobs < 0 or max_duration <= 0:
        _usage(f"--jobs must be >= 0 and --max-duration > 0, got {jobs} and {max_duration}")
    found = _or_exit(lambda: collect_inputs(dirs))
    catalog = _or_exit(lambda: Catalog(db, create=True))
    for note in found.skipped:
        _warn(note)
    sources = [j.source for j in found.jobs]
    console = Console(stderr=True, highlight=False)
    try:
        todo = sources if force else [
            p for p in sources if not (p.is_file() and catalog.is_current(str(p.resolve()), p.stat().st_mtime_ns))
        ]
    except AnalyzerError as exc:  # a damaged catalog
        catalog.close()
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    params = DecodeParams(max_duration_s=max_duration)
    added = failed = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    progress = progress_bar("index", console)
    workers = max(1, min(jobs or _cores(), len(todo)))
    try:
        with progress, closing(_fingerprint_all(todo, params, workers)) as results:
            task = progress.add_task("", total=len(todo))
            # the workers decode and fingerprint; this process is the catalog's one writer
            for path, res in zip(todo, results):
                if isinstance(res, WorkerFailure):
                    failed += 1
                    _say(progress.console, f"error: {quote_path(path)}: {res.reason}")
                elif isinstance(res, str):
                    failed += 1
                    _say(progress.console, f"error: {res}")
                else:
                    catalog.add(path=res.path, times=res.times, codes=res.codes, chroma=res.chroma, duration_s=res.duration_s,
                                sample_md5=res.sample_md5, mtime_ns=res.mtime_ns, title=res.title, artist=res.artist)
                    added += 1
                    audio_s += res.duration_s
                progress.update(task, advance=1, description=one_line(path.name[:40]))
        n_tracks, n_codes = catalog.count()
    except KeyboardInterrupt as exc:
        catalog.close()
        word, code = _stopped(exc)
        _err(f"{word}: stopped the files in progress; files indexed so far are kept, rerun to resume")
        raise typer.Exit(code) from None
    except AnalyzerError as exc:  # the catalog itself (damaged, disk full): nothing more can be added
        catalog.close()
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    catalog.close()
    wall = time.perf_counter() - t0
    sys.stderr.write(one_line(
        f"{added} indexed, {failed} failed, {len(sources) - len(todo)} up to date (skipped); catalog {quote_path(db)}: "
        f"{n_tracks} tracks, {n_codes} codes; {audio_s / 60:.1f} min of audio in {wall:.1f} s"
    ) + "\n")
    raise typer.Exit(EXIT_INPUT if failed else EXIT_OK)


def _fingerprint_all(todo: list[Path], params, workers: int):
    """Each file's catalog codes (or a one-line reason, or a WorkerFailure), in order, from worker processes."""
    from analyzer.library import catalog
    from analyzer.run.workers import WorkerPool

    if not todo:
        return
    # looked up now: tests put a stand-in in its place
    fingerprint = catalog.file_codes_or_error
    with WorkerPool(workers) as pool:
        yield from pool.imap(fingerprint, [(p, params) for p in todo])


@catalog_app.command("identify", help="Identify clips against a catalog made by `analyze index`: prints the best "
                     "matches with scores as JSON (one line per clip with several clips).")
def identify_command(
    clips: Annotated[list[Path], typer.Argument(help="Audio clips (10 s or more works best).", show_default=False)],
    db: Annotated[Path, typer.Option("--db", help="The catalog made by `analyze index`.")],
    top: Annotated[int, typer.Option("--top", "-n", help="How many candidates to list.")] = 5,
    offset: Annotated[float, typer.Option("--offset", help="Start of the excerpt to use, seconds.")] = 0.0,
    duration: Annotated[float, typer.Option("--duration", help="Length of the excerpt, seconds (0: to the end).")] = 0.0,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON (one clip only).")] = False,
) -> None:
    from dataclasses import replace

    import orjson

    from analyzer.stages.audio import DecodeParams
    from analyzer.library.catalog import Catalog, MatchParams, file_codes, match_to_dict
    from analyzer.stages.fingerprint import CODE_UNIT_S

    _finite(offset=offset, duration=duration)
    if top < 1 or offset < 0 or duration < 0:
        _usage("--top must be >= 1, --offset and --duration >= 0")
    catalog = _or_exit(lambda: Catalog(db))
    params = replace(MatchParams(), top=top)
    failed = 0
    try:
        for clip in clips:
            try:
                fc = file_codes(clip, DecodeParams(offset_s=offset, duration_s=duration), query=True)
            except AnalyzerError as exc:
                _err(str(exc))
                failed += 1
                continue
            # an AnalyzerError here is the catalog's (damaged, unreadable): no other clip can be looked up
            res = catalog.lookup(fc.times, fc.codes, fc.chroma, unit_s=CODE_UNIT_S, params=params)
            best = res.matches[0] if res.matches and res.matches[0].matched else None
            out = {
                "query": str(clip),
                "duration": round(fc.duration_s, 3),
                "codes": res.n_query_codes,
                "lookup_ms": round(res.lookup_s * 1000, 2),
                "match": match_to_dict(best) if best else None,
                "candidates": [match_to_dict(m) for m in res.matches],
            }
            opts = orjson.OPT_INDENT_2 if pretty and len(clips) == 1 else 0
            sys.stdout.buffer.write(orjson.dumps(out, option=opts) + b"\n")
            sys.stdout.flush()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        raise typer.Exit(code) from None
    except AnalyzerError as exc:
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    finally:
        catalog.close()
    raise typer.Exit(EXIT_INPUT if failed else EXIT_OK)


