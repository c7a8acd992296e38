"""What every command shares: exit codes, one-line messages, option checks, stop handling."""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional, TypeVar

import typer

from analyzer import __version__
from analyzer.errors import AnalyzerError, one_line, quote_path

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

T = TypeVar("T")


def _err(msg: str) -> None:
    sys.stderr.write(f"error: {one_line(msg)}\n")
    sys.stderr.flush()


def _warn(msg: str) -> None:
    sys.stderr.write(f"warning: {one_line(msg)}\n")
    sys.stderr.flush()


def _say(console, line: str) -> None:
    # one line whatever a message holds (a file name with a newline or an escape code)
    console.print(one_line(line), markup=False, soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, systemd, docker stop): handled as Ctrl-C is, and exits 143 instead of 130."""


def _stopped(exc: KeyboardInterrupt) -> tuple[str, int]:
    """(the word for how the run was stopped, its exit code)."""
    return ("terminated", 128 + signal.SIGTERM) if isinstance(exc, Terminated) else ("interrupted", 130)


def _install_stop_handlers() -> None:
    first: list[int] = []

    def on_signal(signum, frame):
        if first:
            # a second Ctrl-C (or SIGTERM) while the first one is handled: wait for nothing more;
            # the workers end with this process (workers.die_with_parent)
            os._exit(first[0])
        first.append(130 if signum == signal.SIGINT else 128 + signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"analyze {__version__}\n")
        raise typer.Exit(EXIT_OK)


def _finite(**options: float) -> None:
    """Refuse NaN and infinity in number options (a usage error): `--poll nan` would busy-loop,
    `--max-duration nan` turn the limit off."""
    for name, value in options.items():
        if not math.isfinite(value):
            _usage(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def _usage(message: str) -> NoReturn:
    _err(message)
    raise typer.Exit(EXIT_USAGE)


def _or_exit(step: Callable[[], T]) -> T:
    """``step()``, or its AnalyzerError as one line and its exit code."""
    try:
        return step()
    except AnalyzerError as exc:
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1  # honours CPU pinning / container limits
    except AttributeError:
        return os.cpu_count() or 1


class PlotFormat(str, Enum):
    png = "png"
    html = "html"


class Format(str, Enum):
    """How documents are written: one JSON document each, one per line, or one table (-o OUT.parquet)."""

    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"


class Engine(str, Enum):
    """Where the files are analysed: this machine's processes, or a Spark cluster's."""

    local = "local"
    spark = "spark"


def _run_options(*, jobs: int, offset: float, duration: float, max_duration: float, allow_truncated: bool,
                 pretty: bool, fmt: Format, embed_model: Optional[Path], embedder: str, device: str):
    """The options every file is analysed with, from the command line (usage errors exit here)."""
    from analyzer.stages.audio import DecodeParams
    from analyzer.run.batch import RunOptions
    from analyzer.embedding import EmbedderSpec

    _finite(offset=offset, duration=duration, max_duration=max_duration)
    if jobs < 0:
        _usage(f"--jobs must be >= 0, got {jobs}")
    if offset < 0 or duration < 0 or max_duration <= 0:
        _usage("--offset and --duration must be >= 0 and --max-duration > 0")
    return RunOptions(
        decode=DecodeParams(
            offset_s=offset, duration_s=duration, max_duration_s=max_duration, allow_truncated=allow_truncated
        ),
        # one document per line: indentation would break the line format
        pretty=pretty and fmt is Format.json,
        embedder=None if embed_model is None else EmbedderSpec(path=embed_model, kind=embedder, device=device),
    )


def _jobs(paths: list, *, out_dir: Optional[Path], plot_dir: Optional[Path], plot: Optional[Path],
          plot_html: Optional[Path], plot_format: PlotFormat, unique: bool = False, list_uri=None) -> list:
    """The inputs as jobs, each with the reports asked for; clashing or impossible targets exit here
    (`unique`: outputs that would clash are refused without -o too: they are a table's ids; `list_uri`:
    what lists a Hadoop URI, None where the local engine refuses them)."""
    from dataclasses import replace

    from analyzer.run.batch import check_output_clashes, collect_inputs, plot_paths

    def collect():
        found = collect_inputs(paths, list_uri=list_uri)
        if out_dir is not None or plot_dir is not None or unique:
            check_output_clashes(found.jobs)
        return found

    found = _or_exit(collect)
    for note in found.skipped:
        _warn(note)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        _usage(f"-o {quote_path(out_dir)}: exists and is not a folder")
    if plot_dir is not None and plot_dir.exists() and not plot_dir.is_dir():
        _usage(f"--plot-dir {quote_path(plot_dir)}: exists and is not a folder")
    if (plot is not None or plot_html is not None) and len(found.jobs) != 1:
        _usage("--plot and --plot-html take one input file; use --plot-dir DIR for several")
    for flag, target in (("--plot", plot), ("--plot-html", plot_html)):
        if target is not None and target.is_dir():
            _usage(f"{flag} {quote_path(target)}: is a folder; give a file name")
    return [
        replace(
            j,
            plots=plot_paths(j.source, j.output_rel, plot_dir, plot_format.value)
            + ((("png", plot),) if plot is not None else ())
            + ((("html", plot_html),) if plot_html is not None else ()),
        )
        for j in found.jobs
    ]


# `analyze index | identify | features | serve`: each command's module adds itself to this app
catalog_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)


