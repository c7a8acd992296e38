"""`analyze features`: Spotify's audio-features object of each file."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from analyzer.console import quiet_stdout
from analyzer.errors import AnalyzerError, one_line, quote_path
from analyzer.cli.common import (
    _err, _stopped, _usage, _cores, PlotFormat, Format, _run_options, _jobs, EXIT_OK, EXIT_INPUT, EXIT_INTERNAL,
    catalog_app,
)


@catalog_app.command("features", help="Spotify's audio-features object of each file (one JSON object per file; "
                     "jsonl for many). Audio files are analysed; analysis documents (.json) are read as they are.")
def features_command(
    paths: Annotated[list[Path], typer.Argument(help="Audio files, folders, or analysis documents (.json).",
                                                show_default=False)],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="json: one object (one file); jsonl: one per line.")
                   ] = Format.jsonl,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON (one file only).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: number of cores).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    import orjson

    from analyzer.stages.audio import DecodeParams
    from analyzer.document import audio_features_object, path_text, track_id

    docs = [p for p in paths if p.suffix.lower() == ".json" and p.is_file()]
    audio = [p for p in paths if p not in docs]
    job_list = _jobs(audio, out_dir=None, plot_dir=None, plot=None, plot_html=None,
                     plot_format=PlotFormat.png) if audio else []
    if fmt is Format.json and len(docs) + len(job_list) != 1:
        _usage("--format json takes one input; use --format jsonl for several")
    opts = orjson.OPT_INDENT_2 if pretty and len(docs) + len(job_list) == 1 else 0
    failed = internal = False

    def emit(doc: dict, source) -> None:
        sid = track_id(doc["track"]["sample_md5"]) if doc["track"].get("sample_md5") else None
        obj = audio_features_object(doc, track_id=sid)
        obj["path"] = path_text(source)  # extension: the file it came from, for consumers of a stream
        sys.stdout.buffer.write(orjson.dumps(obj, option=opts) + b"\n")
        sys.stdout.flush()

    try:
        for path in docs:
            try:
                doc = orjson.loads(path.read_bytes())
                emit(doc, path)
            except BrokenPipeError:
                raise
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AnalyzerError) as exc:
                _err(f"{quote_path(path)}: not an analysis document ({one_line(str(exc))})")
                failed = True
        if job_list:
            from analyzer.run.batch import run_jobs

            options = _run_options(jobs=jobs, offset=0.0, duration=0.0, max_duration=DecodeParams().max_duration_s,
                                   allow_truncated=False, pretty=False, fmt=Format.jsonl, embed_model=None,
                                   embedder="", device="cpu")
            workers = min(jobs or _cores(), len(job_list))
            with closing(run_jobs(job_list, options, workers=workers)) as results:
                for res in results:
                    if res.error:
                        _err(res.error)
                        if debug and res.detail:
                            sys.stderr.write(res.detail)
                        failed, internal = True, internal or res.internal
                        continue
                    emit(orjson.loads(res.document), res.job.source)
    except BrokenPipeError:
        quiet_stdout()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        raise typer.Exit(code) from None
    raise typer.Exit(EXIT_INTERNAL if internal else EXIT_INPUT if failed else EXIT_OK)


