"""`analyze serve`: a music library as a local Web API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from analyzer.errors import one_line, quote_path
from analyzer.cli.common import _err, _stopped, _finite, _usage, _or_exit, catalog_app


@catalog_app.command("serve", help="Serve a music library as a local Web API in the shape of Spotify's "
                     "(/v1/audio-analysis/ID, /v1/audio-features, /v1/tracks, /v1/search, /v1/recommendations): "
                     "new and changed files are analysed in the background, the folder is watched while serving.")
def serve_command(
    library: Annotated[Path, typer.Argument(help="The music folder (searched recursively).", show_default=False)],
    db: Annotated[Optional[str], typer.Option(
        "--db", help="Where documents are stored: a SQLite file or a postgresql:// URL "
                     "(default: LIBRARY/.analyze/library.db).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (another than loopback needs --token).")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8800,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="ANALYZE_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' (or set ANALYZE_TOKEN); the page asks for it once.")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="A `recommend` model folder: answers /v1/recommendations.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes for the analysis (1: in this process).")]
        = 1,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at the folder for new files.")] = 5.0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests handled at once (more wait).")] = 32,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Refuse files longer than this many seconds.")
    ] = 3600.0,
    allow_truncated: Annotated[
        bool, typer.Option("--allow-truncated", help="Analyze what decodes of a damaged or truncated file "
                           "(its document says so in meta.detailed_status).")
    ] = False,
) -> None:
    from analyzer.run.batch import RunOptions
    from analyzer.stages.audio import DecodeParams

    _finite(poll=poll, max_duration=max_duration)
    if jobs < 1 or poll <= 0 or concurrency < 1 or not 0 < port < 65536 or max_duration <= 0:
        _usage("--jobs and --concurrency must be >= 1, --poll and --max-duration > 0, --port within 1..65535")
    try:
        from analyzer.library.serve import LOOPBACK_NAMES, build_app, is_loopback, listen, serve
    except ModuleNotFoundError as exc:  # starlette or uvicorn missing from a partial install
        if (exc.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise  # our own code failing to import is a bug (exit 3), not a missing dependency
        _usage(f"analyze serve needs starlette and uvicorn ({exc.name} is missing): "
               "pip install 'starlette>=1.5' 'uvicorn>=0.29'")
    if not is_loopback(host) and not token:
        _usage(f"--host {host} takes connections from other machines: give --token (or ANALYZE_TOKEN) too")
    from analyzer.library.store import Indexer, open_library

    recommend = None
    if model is not None:
        recommend = _or_exit(lambda: _load_recommender(model))
    store = _or_exit(lambda: open_library(library, db))
    try:
        sock = _or_exit(lambda: listen(host, port))  # a port in use is said now, before "serving"
    except BaseException:
        store.close()
        raise
    indexer = Indexer(store, RunOptions(decode=DecodeParams(max_duration_s=max_duration,
                                                            allow_truncated=allow_truncated)),
                      workers=jobs, poll_s=poll)
    app_ = build_app(store, indexer, token=token, recommend=recommend, concurrency=concurrency,
                     hosts=(*LOOPBACK_NAMES, host))
    shown_host = f"[{host}]" if ":" in host else host
    sys.stderr.write(one_line(f"serving {quote_path(library)} at http://{shown_host}:{port}/ (the page; the API "
                              f"under /v1/; database: {store.kind})") + "\n")
    sys.stderr.flush()
    indexer.start()
    try:
        serve(app_, sock=sock)
    except KeyboardInterrupt as exc:  # uvicorn shuts down, then raises the signal again: here
        word, code = _stopped(exc)
        _err(f"{word}: the server stopped; every document stored so far is kept")
        raise typer.Exit(code) from None
    finally:
        indexer.stop(timeout_s=1.0)
        store.close()
        sock.close()


# the composition root: `recommender` builds on the analyzer, so the analyzer reaches it by name only here
RECOMMENDER_LOADER = "recommender.serving"


def _load_recommender(model: Path):
    import importlib

    return importlib.import_module(RECOMMENDER_LOADER).load(model)


