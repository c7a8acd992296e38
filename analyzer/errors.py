"""The one exception family of the analyzer.

Library code raises these; only the CLI catches them, prints one line and
exits.  Messages name the bad value and, where it helps, how to fix it.
"""


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


def run_app(app, *, interrupted: str = "interrupted") -> None:
    """Run a Typer app the way every command of the project ends: Typer reports usage errors itself
    (exit 2); ours are one `error:` line and their own exit code; Ctrl-C is one line and 130."""
    import sys

    try:
        app()
    except AnalyzerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {interrupted}\n")
        sys.exit(130)
