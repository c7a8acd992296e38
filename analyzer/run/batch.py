"""Files in, documents out: input discovery, one-file analysis, parallel batches, atomic writes.

Library code: raises AnalyzerError, never prints or exits.  The CLI reports.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath


from analyzer.stages.audio import DecodeParams, decode
from analyzer.embedding import Embedder, EmbedderSpec, embed_analysis, load_embedder
from analyzer.stages.features import EnsembleSize
from analyzer.errors import AnalyzerError, InputError, ParameterError, quote_path

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".aif", ".aiff", ".wma", ".webm", ".mka"}
)


# scheme://...: a Hadoop file system URI (hdfs://, s3a://, file://), listed and read by Spark
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | os.PathLike) -> bool:
    """Whether a command line's input names a Hadoop file system URI (``scheme://...``) rather than a local path.

    Parameters
    ----------
    path : str or path-like
        An input as given.  Only a `str` can be a URI: a `Path` has already folded ``//`` into ``/``.

    Returns
    -------
    bool
    """
    return isinstance(path, str) and _URI.match(path) is not None


@dataclass(frozen=True)
class HadoopFile:
    """A file on a Hadoop file system (``hdfs://``, ``s3a://``, ``file://``), as its listing described it.

    It stands where a job's `Path` stands: ``os.fspath`` gives the URI (so messages, ``meta.filename``
    and Spark's reader see it whole; `pathlib` would fold its ``//``), ``name`` the last part.
    Nothing opens it but Spark.

    Parameters
    ----------
    uri : str
        ``scheme://authority/path``, unescaped (a space is a space), as Hadoop's ``Path`` parses it.
    size : int
        Bytes, from the listing.
    mtime_ns : int
        Modification time, nanoseconds since the epoch (Hadoop keeps milliseconds).
    """

    uri: str
    size: int
    mtime_ns: int

    def __fspath__(self) -> str:
        return self.uri

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        """The last part of the path (``song.mp3``)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def local_path(self) -> Path | None:
        """The local path a ``file://`` URI names; None for any other scheme."""
        scheme, _, rest = self.uri.partition("://")
        if scheme.lower() != "file":
            return None
        return Path("/" + rest.split("/", 1)[1]) if "/" in rest else None


@dataclass(frozen=True)
class Listing:
    """What a Hadoop file system holds at a URI (`SparkEngine.list_uri` makes it).

    Parameters
    ----------
    folder : bool
        The URI names a folder (its files are listed, recursively) rather than one file.
    files : list of (HadoopFile, PurePosixPath)
        Each file with its path relative to the folder (for a file given alone: its own name).
    """

    folder: bool
    files: list[tuple[HadoopFile, PurePosixPath]]


@dataclass(frozen=True)
class Job:
    source: Path | HadoopFile
    output_rel: Path  # relative path of the .json under the output folder
    plots: tuple[tuple[str, Path], ...] = ()  # (format "png"/"html", where to write the visual report)


@dataclass(frozen=True)
class RunOptions:
    decode: DecodeParams = field(default_factory=DecodeParams)
    pretty: bool = False
    embedder: EmbedderSpec | None = None  # an embedding model (cnn/, via its entry point): adds "embedding"
    ensemble: EnsembleSize = field(default_factory=EnsembleSize)  # madmom's networks to run (--fast: fewer)


@dataclass(frozen=True)
class Result:
    job: Job
    document: bytes | None  # serialized document, None on failure
    audio_s: float
    error: str | None  # one line, None on success
    internal: bool = False  # the failure is a bug, not bad input
    detail: str = ""  # traceback for --debug
    plot_error: str | None = None  # the document is fine but a requested report could not be written


@dataclass(frozen=True)
class Inputs:
    jobs: list[Job]
    skipped: list[str]  # one line each: a file found in a folder that is not analysed, and why


# what each kind of file is, and why it is not read
_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder", ""),
    (stat.S_ISFIFO, "a FIFO (named pipe)", ": reading one waits for a writer that may never come"),
    (stat.S_ISSOCK, "a socket", ""),
    (stat.S_ISCHR, "a character device", ": reading one may never end"),
    (stat.S_ISBLK, "a block device", ": reading one may never end"),
)


def not_regular_reason(path: Path) -> str | None:
    """Why `path` is not read as an audio file.

    Parameters
    ----------
    path : Path
        A file name, possibly a link.

    Returns
    -------
    str or None
        None for a regular file, a link to one, or a path that cannot be looked at (missing,
        a broken link: the decoder reports those); otherwise one line without the path
        ("a FIFO (named pipe), not a regular file: ...").
    """
    try:
        st = os.stat(path)  # follows links: a link to a FIFO is a FIFO
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    for test, kind, why in _NOT_REGULAR:
        if test(st.st_mode):
            return f"{kind}, not a regular file{why}"
    return "not a regular file"


def check_regular_file(path: Path) -> None:
    """Refuse anything but a regular file before it is opened: opening a FIFO blocks forever.

    Parameters
    ----------
    path : Path
        The file about to be decoded.

    Raises
    ------
    InputError
        `path` is a FIFO, socket, device or folder (or a link to one).  A missing path passes:
        the decoder reports it.
    """
    why = not_regular_reason(path)
    if why is not None:
        raise InputError(f"{quote_path(path)}: {why}")


def collect_inputs(paths: list[str | os.PathLike], *, list_uri: Callable[[str], Listing] | None = None) -> Inputs:
    """Expand files and folders into jobs, and say which files found in folders are left out.

    Parameters
    ----------
    paths : list of str or Path
        The command line's files and folders (folders are searched recursively; hidden
        entries are left out).  A `str` of the form ``scheme://...`` is a Hadoop file system
        URI (``hdfs://nn/music``, ``s3a://bucket/dir``, ``file:///abs/path``), listed by `list_uri`.
    list_uri : callable, optional
        Lists a URI (`SparkEngine.list_uri`); None: URIs are refused (the local engine cannot
        read them).

    Returns
    -------
    Inputs
        The jobs, with output names unique within a folder (a.mp3 and a.wav become a.mp3.json
        and a.wav.json), and one line per audio-named entry of a folder that is skipped
        because it is not a regular file (a FIFO, socket, device or a link to one).  A folder
        given as a URI follows the same rules, and its jobs' sources are `HadoopFile`.

    Raises
    ------
    InputError
        No paths; a path that does not exist; a path given directly that is not a regular file;
        a folder without audio files; a URI without `list_uri`, or one its file system cannot
        list.  See `check_output_clashes` for outputs that two inputs would share.
    """
    if not paths:
        raise InputError("no input given (pass audio files or folders)")
    jobs: list[Job] = []
    skipped: list[str] = []
    for given in paths:
        if is_uri(given):
            if list_uri is None:
                raise InputError(f"{quote_path(given)}: a Hadoop file system URI; the local engine reads local "
                                 "paths only: add --engine spark to read it through Spark")
            listing = list_uri(given)
            if not listing.folder:
                (source, rel), = listing.files
                if source.local_path is not None:
                    check_regular_file(source.local_path)  # a FIFO given as file:// blocks Spark's reader as well
                jobs.append(Job(source, Path(rel.name).with_suffix(".json")))
                continue
            entries = ((f, rel, None if f.local_path is None else not_regular_reason(f.local_path))
                       for f, rel in sorted(listing.files, key=lambda e: e[1]) if _wanted(rel))
            jobs.extend(_folder_jobs(given, entries, skipped))
            continue
        p = Path(given)
        if p.is_dir():
            jobs.extend(_folder_jobs(p, _local_entries(p), skipped))
        elif p.exists() or p.is_symlink():
            check_regular_file(p)
            jobs.append(Job(p, Path(p.name).with_suffix(".json")))
        else:
            raise InputError(f"{quote_path(p)}: no such file or folder")
    # a.mp3 and a.wav in one folder would both become a.json: keep the extension for those
    seen: dict[Path, int] = {}
    for j in jobs:
        seen[j.output_rel] = seen.get(j.output_rel, 0) + 1
    jobs = [
        Job(j.source, j.output_rel.with_name(j.source.name + ".json")) if seen[j.output_rel] > 1 else j for j in jobs
    ]
    return Inputs(jobs, skipped)


def _wanted(rel) -> bool:
    """A folder's entry is analysed: an audio extension, and no hidden part on the way to it."""
    return rel.suffix.lower() in AUDIO_EXTENSIONS and not any(part.startswith(".") for part in rel.parts)


def _local_entries(folder: Path) -> Iterator[tuple[Path, Path, str | None]]:
    """A local folder's audio-named entries: (file, path relative to the folder, why it is not read or None)."""
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if not _wanted(rel):
            continue
        if f.is_dir() and not f.is_symlink():
            continue  # a folder named like a file: rglob looks inside it
        # (a broken link passes: reported as failed, not dropped)
        yield f, rel, not_regular_reason(f)


def _folder_jobs(folder, entries, skipped: list[str]) -> list[Job]:
    """One folder's jobs (output: its relative path, ``.json``); what is skipped goes to `skipped`."""
    found = []
    n_skipped = len(skipped)
    for f, rel, why in entries:
        if why is None:
            found.append((f, rel))
        else:
            skipped.append(f"{quote_path(f)}: skipped: {why}")
    if not found:
        if len(skipped) > n_skipped:
            raise InputError(
                f"{quote_path(folder)}: folder holds no audio files that are regular files "
                f"({len(skipped) - n_skipped} skipped; first: {skipped[n_skipped]})"
            )
        raise InputError(f"{quote_path(folder)}: folder holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return [Job(f, Path(rel).with_suffix(".json")) for f, rel in found]


def check_output_clashes(jobs: list[Job]) -> None:
    """Refuse, before anything runs, two jobs that would write the same output.

    d1/x.mp3 and d2/x.mp3 given as arguments (or two folders that both hold a/x.mp3) map to
    the same relative output: one document would silently replace the other.  Call it when
    outputs go to files (-o, --plot-dir), not when documents are streamed.

    Parameters
    ----------
    jobs : list of Job
        As `collect_inputs` made them.

    Raises
    ------
    ParameterError
        Naming both inputs and the output they share (exit code 2: a usage error).
    """
    first: dict[Path, Job] = {}
    for j in jobs:
        other = first.setdefault(j.output_rel, j)
        if other is not j:
            raise ParameterError(
                f"{quote_path(other.source)} and {quote_path(j.source)} would both be written to "
                f"{quote_path(j.output_rel)}; give their common folder instead, or analyse them in separate runs"
            )


def _name_max(folder: Path) -> int:
    # the limit of the file system the output goes to; the folder may not exist yet
    for d in (folder, *folder.parents):
        try:
            return os.pathconf(d, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            continue
    return 255


def output_name_problem(job: Job, out_dir: Path | None) -> str | None:
    """Say whether an output of `job` has a name longer than its file system allows.

    Checked before the analysis: a name that fits the source can outgrow the limit as .json
    (x.mp3 -> x.json, or x.mp3.json where two sources in a folder share a stem).

    Parameters
    ----------
    job : Job
        Its document (under `out_dir`) and reports.
    out_dir : Path or None
        Where documents are written; None when they are streamed.

    Returns
    -------
    str or None
        One line ("cannot write ...: file name too long (256 bytes; ...)"), or None.
    """
    targets = ([out_dir / job.output_rel] if out_dir is not None else []) + [p for _, p in job.plots]
    for t in targets:
        n = len(os.fsencode(t.name))
        limit = _name_max(t.parent)
        if n > limit:
            return f"cannot write {quote_path(t)}: file name too long ({n} bytes; this file system allows {limit})"
    return None


class Resources:
    """What analysing a file needs loaded, made once per process and passed to every job.

    The CLI makes one; each batch worker makes its own (`worker_resources`), so nothing is
    loaded into module-level state.  Each part loads on first use, so a part that cannot be
    loaded fails the job that needed it, with its reason.

    Parameters
    ----------
    embedder : EmbedderSpec or None
        The embedding model to load, if any.
    ensemble : EnsembleSize
        How many of madmom's networks to load.
    threads : int or None
        Threads for the embedder's library (1 in a batch worker: the workers already fill the
        cores); None for the library's default.
    """

    def __init__(self, embedder: EmbedderSpec | None = None, *, ensemble: EnsembleSize = EnsembleSize(),
                 threads: int | None = None) -> None:
        self.embedder_spec = embedder
        self.ensemble = ensemble
        self.threads = threads

    @cached_property
    def models(self):
        """The analyzer's networks (`features.Models`)."""
        from analyzer.stages.features import Models

        return Models(self.ensemble)

    @cached_property
    def embedder(self) -> Embedder | None:
        """The embedding model, or None when none was asked for; InputError if it is unusable."""
        return None if self.embedder_spec is None else load_embedder(self.embedder_spec, threads=self.threads)


def worker_resources(options: RunOptions) -> Resources:
    """A batch worker's resources, its networks loaded before its first job."""
    resources = Resources(options.embedder, ensemble=options.ensemble, threads=1)
    resources.models  # noqa: B018
    return resources


def analyze_path(path: Path, options: RunOptions, resources: Resources, data: bytes | None = None):
    """Decode and analyze one file (or its bytes, `data`, named `path`) -> (validated document, the decoded Audio)."""
    from analyzer.document import build_document
    from analyzer.pipeline import analyze

    t0 = time.perf_counter()
    stamp = int(time.time())
    audio = decode(path, params=options.decode, data=data)
    analysis = analyze(audio, models=resources.models)
    embedding = None
    if options.embedder is not None:
        model = resources.embedder
        # a model on the musicnn tagger reads the analysis' tagger output: the tagger runs once
        vector = embed_analysis(model, audio.samples, audio.sr, analysis.tags)
        embedding = None if vector is None else (vector, model.model_id)
    doc = build_document(analysis, timestamp=stamp, analysis_time_s=time.perf_counter() - t0, embedding=embedding)
    return doc, audio


def plot_paths(job_source: Path, output_rel: Path, plot_dir: Path | None, fmt: str) -> tuple[tuple[str, Path], ...]:
    """Where --plot-dir puts a file's report: the JSON's relative path with the report's extension."""
    if plot_dir is None:
        return ()
    return ((fmt, plot_dir / output_rel.with_suffix("." + fmt)),)


def write_plots(job: Job, doc: dict, audio) -> str | None:
    """Render and write the job's reports; a one-line reason if one could not be written."""
    from analyzer.report import render, waveform_envelope

    envelope = waveform_envelope(audio.samples, audio.sr)
    for fmt, path in job.plots:
        try:
            write_atomic(path, render(doc, fmt=fmt, envelope=envelope, title=job.source.name), text=False)
        except OSError as exc:
            return f"cannot write {quote_path(path)}: {exc.strerror or exc}"
    return None


def run_one(resources: Resources, job: Job, options: RunOptions, data: bytes | None = None) -> Result:
    """Analyze one job; failures come back as a Result with a one-line reason, never as an exception.

    Parameters
    ----------
    resources : Resources
        This process's networks (and embedder).
    job : Job
        The file, and the reports to write beside its document.
    options : RunOptions
        How every file of the batch is analysed.
    data : bytes, optional
        The file's content when it was read elsewhere (a Spark executor): `job.source` then
        only names it, for messages and the document's ``meta``.

    Returns
    -------
    Result
        The serialized document, or a one-line reason.
    """
    from analyzer.document import dumps

    try:
        if data is None:
            # checked again here: the file may have been replaced since the batch was collected
            check_regular_file(job.source)
        doc, audio = analyze_path(job.source, options, resources, data)
        plot_error = write_plots(job, doc, audio) if job.plots else None
        return Result(job, dumps(doc, pretty=options.pretty), audio.duration_s, None, plot_error=plot_error)
    except AnalyzerError as exc:
        internal = getattr(exc, "exit_code", 1) == 3
        return Result(job, None, 0.0, str(exc), internal=internal, detail=traceback.format_exc())
    except MemoryError:
        return Result(job, None, 0.0, f"{quote_path(job.source)}: out of memory (try --duration to analyse an excerpt)")
    except Exception as exc:  # a bug: report it, keep the batch going
        return Result(
            job,
            None,
            0.0,
            f"{quote_path(job.source)}: internal error: {type(exc).__name__}: {exc}",
            internal=True,
            detail=traceback.format_exc(),
        )


def source_stamp(source: Path | HadoopFile) -> tuple[int, int] | None:
    """A source's (size in bytes, modification time in ns): what resume compares.

    Parameters
    ----------
    source : Path or HadoopFile
        A local file (looked at now), or a file as its Hadoop listing described it.

    Returns
    -------
    (int, int) or None
        None when a local file cannot be looked at (missing, a broken link).
    """
    if isinstance(source, HadoopFile):
        return source.size, source.mtime_ns
    try:
        st = os.stat(source)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def is_up_to_date(job: Job, out_dir: Path, embedding_model_id: str | None = None) -> bool:
    """The JSON (and every report asked for) exists, is not empty and is newer than the source (a
    `HadoopFile`'s time is its listing's); with an embedding model, the JSON also carries that
    model's embedding."""
    stamp = source_stamp(job.source)
    if stamp is None:
        return False
    try:
        for out in [out_dir / job.output_rel] + [p for _, p in job.plots]:
            st = out.stat()
            if st.st_mtime_ns < stamp[1] or st.st_size == 0:
                return False
        if embedding_model_id is not None:
            import orjson

            doc = orjson.loads((out_dir / job.output_rel).read_bytes())
            return doc.get("embedding_model") == embedding_model_id
        return True
    except (OSError, ValueError):
        return False


def _create_temp(folder: Path) -> tuple[int, Path]:
    # not tempfile.mkstemp: it creates the file 0600 (the output would keep that mode) and names it
    # after the target plus 14 bytes, too long for a name near the 255-byte limit.  A short random
    # name, created exclusively with mode 0666, gets the user's umask like any file they create.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{quote_path(folder)}: no free temporary name")


def write_atomic(path: Path, data: bytes, *, text: bool = True) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file.

    Text ends with a newline (added if missing); binary data is written as is.  The file gets
    the permissions of any new file (0666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if text and not data.endswith(b"\n"):
                fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _lost(job: Job, failure) -> Result:
    hint = "; try fewer --jobs, or --duration for an excerpt" if "out of memory" in failure.reason else ""
    return Result(job, None, 0.0, f"{quote_path(job.source)}: {failure.reason}{hint}", internal=failure.internal,
                  detail=failure.detail)


def run_jobs(
    jobs: list[Job], options: RunOptions, *, workers: int, resources: Resources | None = None,
    on_start: Callable[[Job], None] | None = None,
) -> Iterator[Result]:
    """Analyze jobs, yielding results in input order (so streamed output is deterministic).

    With several workers: a worker killed by the kernel (out of memory) fails its own job
    only and is replaced; closing the iterator early, or an exception (Ctrl-C) while it
    waits, stops the jobs in progress at once (`workers.WorkerPool`).  Close it explicitly
    (`contextlib.closing`) so that happens when the caller stops, not when it is collected.
    """
    if workers <= 1 or len(jobs) <= 1:
        resources = resources or Resources(options.embedder, ensemble=options.ensemble)
        for job in jobs:
            if on_start:
                on_start(job)
            yield run_one(resources, job, options)
        return
    from analyzer.run.workers import WorkerFailure, WorkerPool

    # run_one and worker_resources are looked up now, not at import: tests put stand-ins in their place
    with WorkerPool(workers, setup=worker_resources, setup_args=(options,)) as pool:
        for job, out in zip(jobs, pool.imap(run_one, [(job, options) for job in jobs])):
            yield _lost(job, out) if isinstance(out, WorkerFailure) else out
