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
