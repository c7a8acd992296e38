"""Echo Nest-style music analysis from audio files.

`analyze_file`, `analyze_files` and `analyze_audio` (`analyzer.run.api`) load on first use, so that
``import analyzer`` (and ``analyze --version``) stays cheap.
"""

__version__ = "0.1.0"

_API = ("analyze_file", "analyze_files", "analyze_audio")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from analyzer.run import api

        return getattr(api, name)
    raise AttributeError(f"module 'analyzer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
