"""The analyzer from Python (notebooks, scripts): documents as dicts, or the typed pipeline result.

    >>> from analyzer import analyze_file, analyze_files, analyze_audio
    >>> doc = analyze_file("song.mp3")                    # the document `analyze song.mp3` writes
    >>> for path, doc in analyze_files("music/", jobs=2):  # models loaded once per worker
    ...     ...
    >>> an = analyze_audio("song.mp3")                     # numpy arrays: an.rhythm.beats, ...

Errors are `analyzer.errors.AnalyzerError` (a file that cannot be read or decoded: `InputError`,
`DecodeError`); `analyze_files` hands them back beside each path instead of raising.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from analyzer.run.batch import Resources

__all__ = ["Resources", "analyze_audio", "analyze_file", "analyze_files"]


def _options(offset: float, duration: float, max_duration: float, allow_truncated: bool):
    from analyzer.stages.audio import DecodeParams
    from analyzer.run.batch import RunOptions
    from analyzer.errors import ParameterError

    if offset < 0 or duration < 0 or max_duration <= 0:
        raise ParameterError(f"offset ({offset}) and duration ({duration}) must be >= 0 and max_duration "
                             f"({max_duration}) > 0")
    return RunOptions(decode=DecodeParams(offset_s=offset, duration_s=duration, max_duration_s=max_duration,
                                          allow_truncated=allow_truncated))


def analyze_file(path: str | os.PathLike, *, offset: float = 0.0, duration: float = 0.0,
                 max_duration: float = 3600.0, allow_truncated: bool = False,
                 resources: Resources | None = None) -> dict:
    """Analyse one audio file into its Echo Nest document.

    Parameters
    ----------
    path : path-like
        An audio file.
    offset, duration : float
        The excerpt to analyse, seconds (`duration` 0: to the end), as ``--offset``/``--duration``.
    max_duration : float
        Refuse files longer than this many seconds.
    allow_truncated : bool
        Analyse what decodes of a damaged file.
    resources : Resources or None
        Loaded models to reuse across calls (``Resources()``); None loads them for this call.

    Returns
    -------
    dict
        The document, validated against the schema: the same JSON the CLI writes.

    Raises
    ------
    analyzer.errors.AnalyzerError
        The file cannot be read or decoded, or a parameter is out of range.
    """
    import orjson

    from analyzer.run.batch import analyze_path, check_regular_file
    from analyzer.document import dumps

    path = Path(path)
    options = _options(offset, duration, max_duration, allow_truncated)
    check_regular_file(path)
    doc, _ = analyze_path(path, options, resources or Resources())
    return orjson.loads(dumps(doc))  # exactly what the CLI writes, parsed


def analyze_files(folder_or_paths: str | os.PathLike | list, *, jobs: int = 1, offset: float = 0.0,
                  duration: float = 0.0, max_duration: float = 3600.0, allow_truncated: bool = False,
                  ) -> Iterator[tuple[Path, dict | Exception]]:
    """Analyse many files, yielding each file's document (or its error) in input order.

    Parameters
    ----------
    folder_or_paths : path-like or list of path-like
        A folder (searched recursively, hidden entries left out), a file, or a list of both.
    jobs : int
        Worker processes; each loads the models once.  1 analyses in this process.
    offset, duration, max_duration, allow_truncated
        As `analyze_file`.

    Yields
    ------
    (Path, dict or Exception)
        The file and its document, or an `AnalyzerError` whose message says why it failed
        (the batch goes on).

    Raises
    ------
    analyzer.errors.AnalyzerError
        Before anything runs: a path that does not exist, a folder without audio files.
    """
    import orjson

    from analyzer.run.batch import collect_inputs, run_jobs
    from analyzer.errors import AnalyzerError, ParameterError

    if jobs < 1:
        raise ParameterError(f"jobs must be >= 1, got {jobs}")
    items = folder_or_paths if isinstance(folder_or_paths, (list, tuple)) else [folder_or_paths]
    options = _options(offset, duration, max_duration, allow_truncated)
    found = collect_inputs([Path(p) for p in items])
    with closing(run_jobs(found.jobs, options, workers=min(jobs, max(len(found.jobs), 1)))) as results:
        for res in results:
            if res.error:
                yield res.job.source, AnalyzerError(res.error)
            else:
                yield res.job.source, orjson.loads(res.document)


def analyze_audio(path: str | os.PathLike, *, offset: float = 0.0, duration: float = 0.0,
                  max_duration: float = 3600.0, allow_truncated: bool = False,
                  resources: Resources | None = None):
    """Decode and analyse one file, keeping the arrays: the pipeline's typed result.

    Parameters
    ----------
    path : path-like
        An audio file.
    offset, duration, max_duration, allow_truncated, resources
        As `analyze_file`.

    Returns
    -------
    analyzer.pipeline.Analysis
        ``audio`` (samples, sr), ``rhythm`` (beats, bars, tatums, tempo), ``key``, ``segments``,
        ``sections``, ``loudness``, ... at full precision (the document rounds them).

    Raises
    ------
    analyzer.errors.AnalyzerError
        The file cannot be read or decoded, or a parameter is out of range.
    """
    from analyzer.stages.audio import decode
    from analyzer.run.batch import check_regular_file
    from analyzer.pipeline import analyze

    path = Path(path)
    options = _options(offset, duration, max_duration, allow_truncated)
    check_regular_file(path)
    audio = decode(path, params=options.decode)
    return analyze(audio, models=(resources or Resources()).models)
