"""What every command line of the project shares: the output formats, stdout, the progress bar."""

from __future__ import annotations

import os
import sys
from enum import Enum


class OutputFormat(str, Enum):
    """How documents reach stdout: one JSON document, or one per line."""

    json = "json"
    jsonl = "jsonl"


def progress_bar(label: str, console=None):
    """A rich progress bar on stderr: label, bar, done/total, time left, the task's description.

    Transient (it leaves no trace when done) and disabled when stderr is not a terminal, so
    logs and pipes get only the lines the command prints itself.

    Parameters
    ----------
    label : str
        The command's verb ("analyze", "index", "decoding").
    console : rich.console.Console, optional
        Where to draw; a new one on stderr by default.

    Returns
    -------
    rich.progress.Progress
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True, highlight=False)
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.description}"), console=console, transient=True,
                    disable=not console.is_terminal)


def quiet_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (``| head``): Python's final flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
