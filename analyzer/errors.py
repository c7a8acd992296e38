"""The one exception family of the analyzer.

Library code raises these; only the CLI catches them, prints one line and
exits.  Messages name the bad value and, where it helps, how to fix it; a path
in a message goes through `quote_path`, so no file name can break the one-line
error or reach the terminal raw.
"""

from __future__ import annotations

import os
import re


class AnalyzerError(Exception):
    """Base of every error the analyzer reports to a user."""

    exit_code = 1


class InputError(AnalyzerError):
    """The input path cannot be used (missing, unreadable, not a file)."""


class DecodeError(AnalyzerError):
    """The file exists but holds no decodable audio (or is truncated to nothing)."""


class ParameterError(AnalyzerError):
    """A parameter is out of range (negative offset, bad jobs count, ...)."""

    exit_code = 2


class SchemaError(AnalyzerError):
    """A document failed validation: this is a bug in the analyzer, never written."""

    exit_code = 3


# shlex's set of characters that need no quoting, plus any Unicode letter or digit (\w)
_PLAIN = re.compile(r"[\w@%+=:,./-]+")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\x{o - 0xDC00:02x}"  # a byte that is not UTF-8, kept by surrogateescape
    if ch.isprintable():
        return ch
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def quote_path(path: str | bytes | os.PathLike) -> str:
    """A path as messages show it: on one line, with nothing a terminal would act on.

    Parameters
    ----------
    path : str, bytes or path-like
        Any file name, including one with a newline, an escape code or bytes that are not UTF-8.

    Returns
    -------
    str
        The path as it is when it holds only plain characters (letters, digits, ``@%+=:,./-_``);
        otherwise in single quotes with control and formatting characters, quotes, backslashes
        and undecodable bytes escaped the way Python writes them (``'a b\\n.mp3'``).
    """
    s = os.fsdecode(path)
    if s and _PLAIN.fullmatch(s) and s.isprintable():
        return s
    return "'" + "".join("\\" + ch if ch in "'\\" else _escape_char(ch) for ch in s) + "'"


def one_line(message: str) -> str:
    """`message` with control and formatting characters escaped, so it prints as one line.

    For messages built with raw paths or from an exception's text: the last guard before
    a message reaches the terminal (`quote_path` is the first).

    Parameters
    ----------
    message : str
        Any text.

    Returns
    -------
    str
        The same text; a newline becomes ``\\n``, ESC ``\\x1b``, and so on.
    """
    if message.isprintable():
        return message
    return "".join(_escape_char(ch) for ch in message)


def run_app(app, *, interrupted: str = "interrupted") -> None:
    """Run a Typer app the way every command of the project ends: Typer reports usage errors itself
    (exit 2); ours are one `error:` line and their own exit code; Ctrl-C is one line and 130."""
    import sys

    try:
        app()
    except AnalyzerError as exc:
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {interrupted}\n")
        sys.exit(130)
