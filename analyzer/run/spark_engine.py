"""`analyze --engine spark`: the same documents, analysed by a Spark cluster's Python workers.

The driver (the `analyze` process) collects the inputs, skips what is up to date and writes
every output, exactly as the local engine does; only the analysis moves.  An input given as a
Hadoop file system URI (``hdfs://``, ``s3a://``, ``file://``) is listed on the driver through
the session's Hadoop ``FileSystem`` (`list_hadoop`).  Each file's bytes are read by Spark
(`SparkContext.binaryFiles`: a local path as ``file://``, or the file's URI), so executors need
no shared mount for remote inputs; each Python
worker loads the networks once (`worker_resources`) and keeps them for every task it runs
(Spark reuses Python workers, `spark.python.worker.reuse`), and hands back each document as
JSON text, or its file's one-line failure.

Each group of files (one file by default, ``--partitions`` to group them) is its own Spark job,
submitted from a driver thread, so a task that fails for good (a Python worker that crashed,
was killed, or ran out of memory, after Spark's retries: ``spark.task.maxFailures``, or the
``F`` of a ``local[N,F]`` master) fails the files of that group only; a group that fails is
retried one file per job, so only the file that crashes is reported.

Imported only when ``--engine spark`` is chosen: pyspark and Java are optional.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from analyzer.run.batch import HadoopFile, Job, Listing, Resources, Result, RunOptions
from analyzer.errors import AnalyzerError, InputError, one_line, quote_path

DEFAULT_MASTER = "local[*,2]"  # all cores; a task that fails is tried twice (local mode ignores spark.task.maxFailures)

# one per Python worker process, keyed by what made them and the options they were made for: Spark
# has no per-worker setup hook, and a reused worker runs many tasks (of this batch, or of the next one)
_RESOURCES: dict[tuple[Callable, RunOptions], Resources] = {}
_RESOURCES_LOCK = threading.Lock()

# the characters Hadoop's path globbing gives a meaning to: escaped so a file name is only itself
_GLOB = re.compile(r"([\\{}\[\]*?])")


def require_pyspark() -> None:
    """Refuse at once, in one line, when pyspark cannot be imported.

    Raises
    ------
    AnalyzerError
        pyspark is not installed (Java is checked when the session starts).
    """
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise AnalyzerError("--engine spark needs pyspark (pip install 'echonest-analyzer[spark]') and Java 17") from None


def start_session(master: str, app_name: str = "analyze"):
    """The running SparkSession, or a new one at `master`.

    Parameters
    ----------
    master : str
        ``local[N]``, ``local[N,F]`` (F tries per task), ``spark://host:7077``, ``yarn``, ...
        Ignored when a session is already running in this process (a test's, a notebook's).
    app_name : str
        The application's name in Spark's UI.

    Returns
    -------
    (SparkSession, bool)
        The session, and whether it was started here (and is to be stopped by the caller).

    Raises
    ------
    AnalyzerError
        pyspark is missing, or the session cannot start (no Java, a bad master URL): one line.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    if master.startswith("local"):
        # local workers run this interpreter (a cluster's come from spark.archives / PYSPARK_PYTHON)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    quiet = "-Dlog4j2.configurationFile=" + (Path(__file__).resolve().parents[1] / "data" / "spark-log4j2.properties").as_uri()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyspark's note on the pandas version: not ours to act on
            spark = (SparkSession.builder.master(master).appName(app_name)
                     .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                     .config("spark.driver.extraJavaOptions", quiet)
                     .getOrCreate())
    except Exception as exc:  # noqa: BLE001 - no JVM, a bad master URL: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AnalyzerError(f"cannot start Spark at {master}: {type(exc).__name__}: {first}") from None
    # a failed task is reported as its file's one line; Spark's own log would repeat it with stack traces
    spark.sparkContext.setLogLevel("OFF")
    return spark, True


def source_uri(source: str | os.PathLike) -> str:
    """What Spark reads for an input: a URI as given (``hdfs://...``), a local path as ``file://``.

    Parameters
    ----------
    source : str or path-like
        A job's source.

    Returns
    -------
    str
        A Hadoop path that names this one file: glob characters are escaped, and a comma
        (which would split the path in two) is wrapped in a one-choice glob group.
    """
    s = os.fsdecode(source)
    if "://" not in s:
        s = "file://" + os.path.abspath(s)
    s = _GLOB.sub(r"\\\1", s)
    return s.replace(",", "{\\,}")


def cached_resources(options: RunOptions, setup: Callable[[RunOptions], Resources]) -> Resources:
    """This Python worker's resources for `options`, made by `setup` on first use and kept.

    Parameters
    ----------
    options : RunOptions
        What the batch analyses with (the networks to load, the embedder).
    setup : callable
        Makes the resources (`batch.worker_resources`).

    Returns
    -------
    Resources
    """
    key = (setup, options)
    with _RESOURCES_LOCK:
        if key not in _RESOURCES:
            _RESOURCES[key] = setup(options)
        return _RESOURCES[key]


def analyze_partition(rows, *, options: RunOptions, run: Callable, setup: Callable) -> Iterator[tuple]:
    """The Python worker's side: analyze each file of a partition from its bytes.

    Parameters
    ----------
    rows : iterable of (int, Job, (str, bytes))
        Each file's index in the batch, its job (as the driver made it: a `HadoopFile` source
        keeps its URI whole), and what `binaryFiles` read: (URI, content).
    options : RunOptions
        How each file is analysed.
    run, setup : callable
        `batch.run_one` and `batch.worker_resources`, as the driver found them.

    Yields
    ------
    tuple
        (index, document bytes or None, audio seconds, one-line error or None, internal, detail):
        a file's failure is a value, so one bad file does not fail the others of its partition.
    """
    resources = cached_resources(options, setup)
    for index, job, (_, content) in rows:
        res = run(resources, job, options, data=bytes(content))
        yield index, res.document, res.audio_s, res.error, res.internal, res.detail


def java_reason(exc: BaseException) -> str:
    """One line from an exception raised through Spark's JVM gateway (Hadoop's, usually).

    Parameters
    ----------
    exc : BaseException
        A Py4JJavaError, or pyspark's translation of one (IllegalArgumentException, ...).

    Returns
    -------
    str
        ``ClassName: message`` of the Java exception (its first line), or of `exc` itself.
    """
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            kind = str(java.getClass().getSimpleName())
            text = str(java.getMessage() or "")
        except Exception:  # noqa: BLE001 - the gateway itself failed: fall back to the Python text
            kind, text = type(exc).__name__, str(exc)
    else:
        kind, text = type(exc).__name__, str(exc)
    first = (text.strip().splitlines() or [""])[0]
    return one_line(f"{kind}: {first}"[:300] if first else kind)


def list_hadoop(spark, uri: str) -> Listing:
    """List a Hadoop file system URI on the driver: a file, or every file under a folder.

    Uses the file system Hadoop's configuration maps the URI's scheme to (``hdfs://`` through
    ``HADOOP_CONF_DIR``'s namenode, ``s3a://`` through hadoop-aws and its credentials,
    ``file://`` the driver's own disk).

    Parameters
    ----------
    spark : SparkSession
        A running session: its JVM and Hadoop configuration.
    uri : str
        ``scheme://authority/path`` of a file or folder.

    Returns
    -------
    Listing
        Each file (recursively, for a folder) as a `HadoopFile` (URI, size, modification time)
        with its path relative to the folder; hidden entries and non-audio names are kept here
        and filtered by `batch.collect_inputs`, as for a local folder.

    Raises
    ------
    InputError
        No such file or folder, or the file system cannot be reached or listed (no connector
        for the scheme, an unknown host, no credentials): one line with Hadoop's reason.
    """
    sc = spark.sparkContext
    jvm = sc._jvm
    try:
        path = jvm.org.apache.hadoop.fs.Path(uri)
        fs = path.getFileSystem(sc._jsc.hadoopConfiguration())
        status = fs.getFileStatus(path)
        base = PurePosixPath(_path_part(status.getPath()))
        if not status.isDirectory():
            return Listing(folder=False, files=[(_hadoop_file(status), PurePosixPath(base.name))])
        files = []
        it = fs.listFiles(path, True)
        while it.hasNext():
            st = it.next()
            files.append((_hadoop_file(st), PurePosixPath(_path_part(st.getPath())).relative_to(base)))
    except Exception as exc:  # noqa: BLE001 - Hadoop's exceptions arrive through the gateway: one line
        java = getattr(exc, "java_exception", None)
        try:
            missing = java is not None and str(java.getClass().getName()) == "java.io.FileNotFoundException"
        except Exception:  # noqa: BLE001
            missing = False
        if missing:
            raise InputError(f"{quote_path(uri)}: no such file or folder") from None
        raise InputError(f"{quote_path(uri)}: cannot list it ({java_reason(exc)})") from None
    return Listing(folder=True, files=files)


def _path_part(hadoop_path) -> str:
    """The path of a Hadoop ``Path``, unescaped (``/music/a b.mp3``)."""
    return str(hadoop_path.toUri().getPath())


def _hadoop_file(status) -> HadoopFile:
    """A listed file as a `HadoopFile`: ``scheme://authority/path`` (``file:///abs/a.mp3``), its size and time."""
    u = status.getPath().toUri()
    uri = f"{u.getScheme()}://{u.getAuthority() or ''}{u.getPath()}"
    return HadoopFile(uri=uri, size=int(status.getLen()), mtime_ns=int(status.getModificationTime()) * 1_000_000)


def task_failure_reason(exc: BaseException) -> str:
    """One line from a failed Spark job's exception: how often the task failed, and the last cause.

    Parameters
    ----------
    exc : BaseException
        What `collect` raised (a Py4JJavaError, usually).

    Returns
    -------
    str
        E.g. "Spark task failed 2 times: Python worker exited unexpectedly (crashed)".
    """
    text = str(exc)
    times = re.search(r"failed (\d+) times?", text)
    cause = ""
    for pattern in (r"(Python worker exited unexpectedly[^\n]*)", r"(\w+(?:Error|Exception): [^\n]+)"):
        m = re.search(pattern, text.split("most recent failure", 1)[-1])
        if m:
            cause = m.group(1).split(". Consider setting", 1)[0].strip()
            break
    cause = cause or (text.strip().splitlines() or [type(exc).__name__])[0]
    prefix = f"Spark task failed {times.group(1)} times" if times else "Spark job failed"
    return f"{prefix}: {cause[:300]}"


class SparkEngine:
    """Analyze jobs on Spark; the driver side.

    Parameters
    ----------
    master : str
        The Spark master URL (`DEFAULT_MASTER`: this machine's cores).
    partitions : int
        Spark tasks to split the files into; 0: one task per file (each file fails or
        succeeds alone; the default).

    Notes
    -----
    Use as a context manager: the session is started on first use (`start`) and stopped on
    exit when it was started here.
    """

    def __init__(self, master: str = DEFAULT_MASTER, partitions: int = 0) -> None:
        require_pyspark()
        self.master = master
        self.partitions = partitions
        self.spark = None
        self._owned = False

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start (or join) the Spark session; AnalyzerError in one line if it cannot start."""
        if self.spark is None:
            self.spark, self._owned = start_session(self.master)

    def close(self) -> None:
        """Stop the session if it was started here."""
        if self.spark is not None and self._owned:
            self.spark.stop()
        self.spark = None

    def list_uri(self, uri: str) -> Listing:
        """List a Hadoop file system URI (`list_hadoop`) with this engine's session (started if needed).

        Parameters
        ----------
        uri : str
            ``hdfs://nn/music``, ``s3a://bucket/dir``, ``file:///abs/path``: a file or a folder.

        Returns
        -------
        Listing

        Raises
        ------
        AnalyzerError
            The session cannot start, or the URI cannot be listed (`InputError`).
        """
        self.start()
        return list_hadoop(self.spark, uri)

    @property
    def workers(self) -> int:
        """Tasks Spark runs at once (its default parallelism: the executors' cores)."""
        self.start()
        return int(self.spark.sparkContext.defaultParallelism)

    def run_jobs(self, jobs: list[Job], options: RunOptions) -> Iterator[Result]:
        """Analyze `jobs` on Spark, yielding results in input order, as `batch.run_jobs` does.

        Parameters
        ----------
        jobs : list of Job
            Files to analyse (without reports: those are written by the local engine only).
        options : RunOptions
            How each file is analysed.

        Yields
        ------
        Result
            One per job, in order; a failed task is its files' failure.  Closing the iterator
            (or Ctrl-C while it waits) cancels the Spark jobs still running.
        """
        if not jobs:
            return
        from analyzer.run import batch

        self.start()
        sc = self.spark.sparkContext
        # looked up now, not at import: tests put stand-ins in their place
        run, setup = batch.run_one, batch.worker_resources
        groups = _split(list(enumerate(jobs)), self.partitions or len(jobs))
        group_id = f"analyze-{os.getpid()}-{id(self)}"
        cancelled = threading.Event()

        def run_group(group: list[tuple[int, Job]]) -> dict[int, Result]:
            sc.setJobGroup(group_id, "analyze", interruptOnCancel=True)
            try:
                return self._collect(group, options, run, setup)
            except Exception as exc:  # noqa: BLE001 - a task that failed for good: its files' failure
                if cancelled.is_set():
                    raise
                if len(group) > 1:  # find the file that fails: one job each
                    return {k: v for single in group for k, v in run_group([single]).items()}
                index, job = group[0]
                return {index: Result(job, None, 0.0, f"{quote_path(job.source)}: {task_failure_reason(exc)}",
                                      internal=True, detail=str(exc))}

        pool = ThreadPoolExecutor(max_workers=max(1, min(len(groups), self.workers)), thread_name_prefix="spark")
        try:
            futures: list[Future] = [pool.submit(run_group, g) for g in groups]
            done: dict[int, Result] = {}
            for future, group in zip(futures, groups):
                done.update(future.result())
                for index, _ in group:
                    yield done.pop(index)
        finally:
            cancelled.set()
            sc.cancelJobGroup(group_id)
            pool.shutdown(wait=False, cancel_futures=True)

    def _collect(self, group: list[tuple[int, Job]], options: RunOptions, run, setup) -> dict[int, Result]:
        sc = self.spark.sparkContext
        parts = [sc.binaryFiles(source_uri(job.source)).map(lambda kv, i=index, j=job: (i, j, kv))
                 for index, job in group]
        rdd = parts[0] if len(parts) == 1 else sc.union(parts).coalesce(1)
        rows = rdd.mapPartitions(lambda it: analyze_partition(it, options=options, run=run, setup=setup)).collect()
        by_index = dict(group)
        out = {i: Result(by_index[i], doc, audio_s, error, internal=internal, detail=detail)
               for i, doc, audio_s, error, internal, detail in rows}
        for index, job in group:  # a path that matched nothing (removed since it was listed)
            out.setdefault(index, Result(job, None, 0.0, f"{quote_path(job.source)}: no such file (Spark read nothing)"))
        return out


def _split(items: list, n: int) -> list[list]:
    """`items` in `n` contiguous groups of near-equal size (none empty)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    it = iter(items)
    return [list(itertools.islice(it, size + (k < extra))) for k in range(n)]
