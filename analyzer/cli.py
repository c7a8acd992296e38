"""`analyze`: Typer only. Options -> config -> library calls -> write -> exit code."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import closing
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional, TypeVar

import typer

from . import __version__
from .console import progress_bar, quiet_stdout
from .errors import AnalyzerError, one_line, quote_path

T = TypeVar("T")

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


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


app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None
)


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


@app.command(
    help="Analyze audio files into Echo Nest analysis documents (JSON).\n\n"
    "analyze song.mp3 > song.json  |  analyze music/ -o out/  |  analyze music/ --format jsonl | jq .track.tempo\n\n"
    "On Spark: analyze music/ -o out/ --engine spark [--spark-master URL]  |  "
    "analyze music/ --format parquet -o tracks.parquet\n\n"
    "Identification: analyze index music/ --db catalog.db  |  analyze identify clip.mp3 --db catalog.db "
    "Serving a library: analyze serve music/ --port 8800 (Spotify-shaped Web API). "
    "A file named index, identify or serve: write ./index.",
)
def main_command(
    # str, not Path: a Hadoop URI (hdfs://nn/music) would lose its "//" to Path
    paths: Annotated[list[str], typer.Argument(
        help="Audio files or folders (searched recursively); with --engine spark also Hadoop file system URIs "
        "(hdfs://namenode/music, s3a://bucket/dir, file:///abs/path).", show_default=False)],
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write OUT/<relative path>.json per file instead of stdout.")
    ] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="json: one document; jsonl: one document per line; parquet: one table row per "
        "track, to -o OUT.parquet.")] = Format.json,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: number of cores).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Re-analyze files whose output is already up to date.")] = False,
    offset: Annotated[float, typer.Option("--offset", help="Start of the excerpt to analyze, seconds.")] = 0.0,
    duration: Annotated[float, typer.Option("--duration", help="Length of the excerpt, seconds (0: to the end).")] = 0.0,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Refuse files longer than this many seconds.")
    ] = 3600.0,
    allow_truncated: Annotated[
        bool, typer.Option("--allow-truncated", help="Analyze what decodes of a damaged or truncated file.")
    ] = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also draw the analysis to this PNG (one input file).")
    ] = None,
    plot_html: Annotated[
        Optional[Path],
        typer.Option("--plot-html", help="Also write the analysis as a self-contained HTML page (one input file)."),
    ] = None,
    plot_dir: Annotated[
        Optional[Path], typer.Option("--plot-dir", help="Draw each file's analysis to DIR/<relative path>.png (or .html).")
    ] = None,
    plot_format: Annotated[
        PlotFormat, typer.Option("--plot-format", help="Report format for --plot-dir.")
    ] = PlotFormat.png,
    embed_model: Annotated[
        Optional[Path], typer.Option("--model", help="An embedding model (cnn train): adds its \"embedding\" of each track.")
    ] = None,
    embedder: Annotated[
        str, typer.Option("--embedder", help="What reads --model: an installed embedder's name, or module:function.")
    ] = "cnn",
    device: Annotated[str, typer.Option("--device", help="Where the model runs: cpu, or cuda where a GPU exists.")] = "cpu",
    engine: Annotated[Engine, typer.Option(
        "--engine", help="local: worker processes here (--jobs); spark: a Spark cluster's executors.")] = Engine.local,
    spark_master: Annotated[Optional[str], typer.Option(
        "--spark-master", help="With --engine spark: the master URL (default local[*,2]: this machine's cores, "
        "each task tried twice; spark://host:7077, yarn, k8s://...).", show_default=False)] = None,
    partitions: Annotated[int, typer.Option(
        "--partitions", help="With --engine spark: tasks to split the files into (0: one task per file).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from .batch import Resources

    _check_engine(engine, spark_master=spark_master, partitions=partitions, fmt=fmt, out_dir=out_dir,
                  plots=plot is not None or plot_html is not None or plot_dir is not None)
    options = _run_options(jobs=jobs, offset=offset, duration=duration, max_duration=max_duration,
                           allow_truncated=allow_truncated, pretty=pretty, fmt=fmt, embed_model=embed_model,
                           embedder=embedder, device=device)
    # this process's networks and embedder (loaded on first use; batch workers make their own)
    resources = Resources(options.embedder, ensemble=options.ensemble)
    if options.embedder is not None:
        # a bad model file is one error now, not one per input
        _or_exit(lambda: resources.embedder)
    table = fmt is Format.parquet
    if engine is Engine.local:
        job_list = _jobs(paths, out_dir=None if table else out_dir, plot_dir=plot_dir, plot=plot, plot_html=plot_html,
                         plot_format=plot_format, unique=table)
        single = len(job_list) == 1 and not Path(paths[0]).is_dir() and out_dir is None
        if single:
            raise typer.Exit(_run_single(job_list[0], options, resources, fmt, debug))
        _check_stdout_format(out_dir, fmt)
        raise typer.Exit(_run_batch(job_list, options, resources, out_dir, fmt, jobs or _cores(), force, debug))
    from .spark_engine import DEFAULT_MASTER, SparkEngine  # pyspark is optional: imported for --engine spark only

    with _or_exit(lambda: SparkEngine(spark_master or DEFAULT_MASTER, partitions)) as spark:
        # a URI is listed by the session's Hadoop file systems (the session starts for it)
        job_list = _jobs(paths, out_dir=None if table else out_dir, plot_dir=None, plot=None, plot_html=None,
                         plot_format=plot_format, unique=table, list_uri=spark.list_uri)
        _check_stdout_format(out_dir, fmt)
        code = _run_batch(job_list, options, resources, out_dir, fmt, jobs or _cores(), force, debug, spark=spark)
    raise typer.Exit(code)


def _check_stdout_format(out_dir: Optional[Path], fmt: Format) -> None:
    if out_dir is None and fmt is Format.json:
        _usage("several inputs need -o OUT_DIR or --format jsonl (one document per line on stdout)")


def _check_engine(engine: Engine, *, spark_master: Optional[str], partitions: int, fmt: Format,
                  out_dir: Optional[Path], plots: bool) -> None:
    """Usage errors of --engine, --spark-master, --partitions and --format parquet exit here."""
    if engine is Engine.local and (spark_master is not None or partitions):
        _usage("--spark-master and --partitions need --engine spark")
    if partitions < 0:
        _usage(f"--partitions must be >= 0, got {partitions}")
    if engine is Engine.spark and plots:
        _usage("--plot, --plot-html and --plot-dir need --engine local (Spark's executors would draw them on "
               "their own disks)")
    if fmt is Format.parquet:
        if out_dir is None or out_dir.suffix != ".parquet":
            _usage("--format parquet writes one table: give it as -o OUT.parquet")
        if out_dir.is_dir() and any(out_dir.glob("*.json")):
            _usage(f"-o {quote_path(out_dir)}: holds analysis documents, not a table; give a new name")


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


def _run_options(*, jobs: int, offset: float, duration: float, max_duration: float, allow_truncated: bool,
                 pretty: bool, fmt: Format, embed_model: Optional[Path], embedder: str, device: str):
    """The options every file is analysed with, from the command line (usage errors exit here)."""
    from .audio import DecodeParams
    from .batch import RunOptions
    from .embedding import EmbedderSpec

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

    from .batch import check_output_clashes, collect_inputs, plot_paths

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


def _run_single(job, options, resources, fmt: Format, debug: bool) -> int:
    from .batch import run_one

    try:
        res = run_one(resources, job, options)
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        return code
    if res.error:
        _err(res.error)
        if debug and res.detail:
            sys.stderr.write(res.detail)
        return EXIT_INTERNAL if res.internal else EXIT_INPUT
    try:
        sys.stdout.buffer.write(res.document + b"\n")
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()  # the reader went away (e.g. `| head -c 100`): not an error
    if res.plot_error:
        _err(res.plot_error)
        return EXIT_INPUT
    return EXIT_OK


def _run_batch(job_list, options, resources, out_dir: Optional[Path], fmt: Format, workers: int, force: bool,
               debug: bool, spark=None) -> int:
    """Analyze the jobs (here, or on `spark`: a `spark_engine.SparkEngine`), write each document as it
    comes (to OUT/, stdout, or the table), report failures and the summary; the exit code."""
    from dataclasses import replace

    from rich.console import Console

    from .batch import is_up_to_date, write_atomic

    if fmt is Format.parquet:
        return _run_table(job_list, options, resources, out_dir, workers, force, debug, spark)
    console = Console(stderr=True, highlight=False)
    todo = job_list
    if out_dir is not None and not force:
        model_id = None if options.embedder is None else resources.embedder.model_id
        todo = [j for j in job_list if not is_up_to_date(j, out_dir, model_id)]
    if out_dir is None:
        options = replace(options, pretty=False)

    def emit(res) -> Optional[str]:
        if out_dir is None:
            sys.stdout.buffer.write(res.document + b"\n")
            sys.stdout.flush()
            return None
        try:
            write_atomic(out_dir / res.job.output_rel, res.document)
        except OSError as exc:
            # disk full, read-only folder, a file in the way: report it, keep going
            return f"cannot write {quote_path(out_dir / res.job.output_rel)}: {exc.strerror or exc}"
        return None

    return _analyze(todo, len(job_list) - len(todo), options, resources, out_dir=out_dir, workers=workers,
                    debug=debug, spark=spark, console=console, emit=emit)


class _Abandon(Exception):
    """The batch's one output (the table) cannot be written: stop analysing; the message says why."""


def _analyze(todo, skipped: int, options, resources, *, out_dir: Optional[Path], workers: int, debug: bool, spark,
             console, emit: Callable, finish: Optional[Callable[[], None]] = None,
             on_stop: Optional[Callable[[], str]] = None) -> int:
    """Run `todo`, hand each document to `emit` (a one-line reason back if it could not be written;
    `_Abandon` stops the batch), then `finish`; failures, the summary line and the exit code.
    `on_stop`: what Ctrl-C keeps, in words (after saving it)."""
    from .batch import output_name_problem, run_jobs

    failed = internal = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    progress = progress_bar("analyze", console)
    # an output name the file system cannot hold fails now, not after its file's analysis
    runnable = []
    for j in todo:
        problem = output_name_problem(j, out_dir)
        if problem is None:
            runnable.append(j)
        else:
            failed += 1
            _say(console, f"error: {problem}")
    if spark is not None and runnable:
        workers = _or_exit(lambda: spark.workers)  # starts the session: no Java, a bad master URL exit here
    try:
        n_workers = min(workers, max(len(runnable), 1))
        results = (run_jobs(runnable, options, workers=n_workers, resources=resources) if spark is None
                   else spark.run_jobs(runnable, options))
        with progress, closing(results):
            task = progress.add_task("", total=len(runnable))
            for res in results:
                if res.error:
                    failed += 1
                    internal += res.internal
                    _say(progress.console, f"error: {res.error}")
                    if debug and res.detail:
                        progress.console.print(res.detail, markup=False)
                else:
                    audio_s += res.audio_s
                    if res.plot_error:
                        failed += 1
                        _say(progress.console, f"error: {res.plot_error}")
                    problem = emit(res)
                    if problem is not None:
                        failed += 1
                        audio_s -= res.audio_s
                        _say(progress.console, f"error: {problem}")
                progress.update(task, advance=1, description=one_line(res.job.source.name[:40]))
        if finish is not None:
            finish()
    except KeyboardInterrupt as exc:
        # run_jobs has stopped the files in progress at once (closing it stops its workers):
        # waiting for them could take minutes per file
        word, code = _stopped(exc)
        kept = on_stop() if on_stop is not None else "finished outputs are kept, rerun to resume"
        _err(f"{word}: stopped the files in progress (nothing of theirs is written); {kept}")
        return code
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly
        quiet_stdout()
        return EXIT_OK
    except _Abandon as exc:
        _say(console, f"error: {exc}")
        failed, audio_s = len(todo), 0.0  # nothing of this run reached the output
    wall = time.perf_counter() - t0
    ok = len(todo) - failed
    rtf = audio_s / wall if wall > 0 else 0.0
    summary = (
        f"{ok} analyzed, {failed} failed, {skipped} up to date (skipped); "
        f"{audio_s / 3600:.2f} h of audio in {wall:.1f} s ({rtf:.1f}x realtime, {min(workers, max(len(todo), 1))} workers)"
    )
    sys.stderr.write(summary + "\n")
    if internal:
        return EXIT_INTERNAL
    return EXIT_INPUT if failed else EXIT_OK


def _run_table(job_list, options, resources, path: Path, workers: int, force: bool, debug: bool, spark) -> int:
    """`--format parquet`: keep the rows of unchanged files, analyse the rest, write the table beside the
    old one as results come and swap it in at the end (or at Ctrl-C, with what is finished)."""
    from dataclasses import replace

    from rich.console import Console

    from .tables import TableWriter, has_pyarrow, plan_table, table_session

    console = Console(stderr=True, highlight=False)
    options = replace(options, pretty=False)
    model_id = None if options.embedder is None else resources.embedder.model_id

    def engine_session():
        # where pyarrow is missing, Spark writes the table: the engine's session (started now), or a local one
        if spark is None or has_pyarrow():
            return None
        spark.start()
        return spark.spark

    try:
        with table_session(_or_exit(engine_session)) as session:
            plan = plan_table(path, job_list, force=force, embedding_model_id=model_id, spark=session)
            if plan.gone:
                _say(console, f"{quote_path(path)}: {plan.gone} row(s) of files no longer among the inputs "
                     "are left out of the table")
            skipped = len(job_list) - len(plan.todo)
            if plan.unchanged:  # the table is this run's already: not rewritten
                return _analyze([], skipped, options, resources, out_dir=None, workers=workers, debug=debug,
                                spark=spark, console=console, emit=lambda res: None)
            with TableWriter(path, spark=session) as writer:
                sink = _TableSink(writer, path, plan)
                return _analyze(plan.todo, skipped, options, resources, out_dir=None, workers=workers, debug=debug,
                                spark=spark, console=console, emit=sink.emit, finish=sink.finish,
                                on_stop=sink.on_stop)
    except _Abandon as exc:  # the old table could not be copied
        _err(str(exc))
        return EXIT_INPUT
    except AnalyzerError as exc:  # the old table is not one of ours; no Spark to write with
        _err(str(exc))
        return getattr(exc, "exit_code", EXIT_INPUT)


class _TableSink:
    """A batch's documents into a `tables.TableWriter`: the rows of unchanged files first, then each
    document as it comes; a failure to write stops the batch (`_Abandon`), and the old table stays."""

    def __init__(self, writer, path: Path, plan) -> None:
        self.writer, self.path, self.stamps = writer, path, plan.stamps
        self._guard(lambda: writer.keep(path, plan.kept))

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - disk full, a damaged old table, Spark's writer failed
            text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
            raise _Abandon(f"cannot write {quote_path(self.path)}: {first}; the old table is kept") from None

    def emit(self, res) -> None:
        from .tables import document_row

        stamp = self.stamps.get(os.fsdecode(res.job.source))  # as it was before it was read
        self._guard(lambda: self.writer.add(document_row(res.job, res.document, stamp)))

    def finish(self) -> None:
        self._guard(self.writer.commit)

    def on_stop(self) -> str:
        """Ctrl-C: the table with what is finished (a rerun does the rest), or the old one if that fails."""
        try:
            self.writer.commit()
        except Exception:  # noqa: BLE001 - the old table stays as it was
            self.writer.abort()
            return f"the table {quote_path(self.path)} is unchanged, rerun to resume"
        return f"the table {quote_path(self.path)} holds the files finished so far, rerun to resume"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1  # honours CPU pinning / container limits
    except AttributeError:
        return os.cpu_count() or 1


catalog_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)


@catalog_app.command("index", help="Fingerprint every audio file under DIRS into a SQLite catalog (added or updated; "
                     "files already indexed and unchanged are skipped).")
def index_command(
    dirs: Annotated[list[Path], typer.Argument(help="Audio files or folders (searched recursively).", show_default=False)],
    db: Annotated[Path, typer.Option("--db", help="The catalog file (created if missing).")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: number of cores).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Re-fingerprint files already in the catalog.")] = False,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Refuse files longer than this many seconds.")
    ] = 3600.0,
) -> None:
    from rich.console import Console

    from .audio import DecodeParams
    from .batch import collect_inputs
    from .catalog import Catalog
    from .workers import WorkerFailure

    if jobs < 0:
        _usage(f"--jobs must be >= 0, got {jobs}")
    found = _or_exit(lambda: collect_inputs(dirs))
    catalog = _or_exit(lambda: Catalog(db, create=True))
    for note in found.skipped:
        _warn(note)
    sources = [j.source for j in found.jobs]
    console = Console(stderr=True, highlight=False)
    try:
        todo = sources if force else [
            p for p in sources if not (p.is_file() and catalog.is_current(str(p.resolve()), p.stat().st_mtime_ns))
        ]
    except AnalyzerError as exc:  # a damaged catalog
        catalog.close()
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    params = DecodeParams(max_duration_s=max_duration)
    added = failed = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    progress = progress_bar("index", console)
    workers = max(1, min(jobs or _cores(), len(todo)))
    try:
        with progress, closing(_fingerprint_all(todo, params, workers)) as results:
            task = progress.add_task("", total=len(todo))
            # the workers decode and fingerprint; this process is the catalog's one writer
            for path, res in zip(todo, results):
                if isinstance(res, WorkerFailure):
                    failed += 1
                    _say(progress.console, f"error: {quote_path(path)}: {res.reason}")
                elif isinstance(res, str):
                    failed += 1
                    _say(progress.console, f"error: {res}")
                else:
                    catalog.add(path=res.path, times=res.times, codes=res.codes, chroma=res.chroma, duration_s=res.duration_s,
                                sample_md5=res.sample_md5, mtime_ns=res.mtime_ns, title=res.title, artist=res.artist)
                    added += 1
                    audio_s += res.duration_s
                progress.update(task, advance=1, description=one_line(path.name[:40]))
        n_tracks, n_codes = catalog.count()
    except KeyboardInterrupt as exc:
        catalog.close()
        word, code = _stopped(exc)
        _err(f"{word}: stopped the files in progress; files indexed so far are kept, rerun to resume")
        raise typer.Exit(code) from None
    except AnalyzerError as exc:  # the catalog itself (damaged, disk full): nothing more can be added
        catalog.close()
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    catalog.close()
    wall = time.perf_counter() - t0
    sys.stderr.write(one_line(
        f"{added} indexed, {failed} failed, {len(sources) - len(todo)} up to date (skipped); catalog {quote_path(db)}: "
        f"{n_tracks} tracks, {n_codes} codes; {audio_s / 60:.1f} min of audio in {wall:.1f} s"
    ) + "\n")
    raise typer.Exit(EXIT_INPUT if failed else EXIT_OK)


def _fingerprint_all(todo: list[Path], params, workers: int):
    """Each file's catalog codes (or a one-line reason, or a WorkerFailure), in order, from worker processes."""
    from . import catalog
    from .workers import WorkerPool

    if not todo:
        return
    # looked up now: tests put a stand-in in its place
    fingerprint = catalog.file_codes_or_error
    with WorkerPool(workers) as pool:
        yield from pool.imap(fingerprint, [(p, params) for p in todo])


@catalog_app.command("identify", help="Identify clips against a catalog made by `analyze index`: prints the best "
                     "matches with scores as JSON (one line per clip with several clips).")
def identify_command(
    clips: Annotated[list[Path], typer.Argument(help="Audio clips (10 s or more works best).", show_default=False)],
    db: Annotated[Path, typer.Option("--db", help="The catalog made by `analyze index`.")],
    top: Annotated[int, typer.Option("--top", "-n", help="How many candidates to list.")] = 5,
    offset: Annotated[float, typer.Option("--offset", help="Start of the excerpt to use, seconds.")] = 0.0,
    duration: Annotated[float, typer.Option("--duration", help="Length of the excerpt, seconds (0: to the end).")] = 0.0,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON (one clip only).")] = False,
) -> None:
    from dataclasses import replace

    import orjson

    from .audio import DecodeParams
    from .catalog import Catalog, MatchParams, file_codes, match_to_dict
    from .fingerprint import CODE_UNIT_S

    if top < 1 or offset < 0 or duration < 0:
        _usage("--top must be >= 1, --offset and --duration >= 0")
    catalog = _or_exit(lambda: Catalog(db))
    params = replace(MatchParams(), top=top)
    failed = 0
    try:
        for clip in clips:
            try:
                fc = file_codes(clip, DecodeParams(offset_s=offset, duration_s=duration), query=True)
            except AnalyzerError as exc:
                _err(str(exc))
                failed += 1
                continue
            # an AnalyzerError here is the catalog's (damaged, unreadable): no other clip can be looked up
            res = catalog.lookup(fc.times, fc.codes, fc.chroma, unit_s=CODE_UNIT_S, params=params)
            best = res.matches[0] if res.matches and res.matches[0].matched else None
            out = {
                "query": str(clip),
                "duration": round(fc.duration_s, 3),
                "codes": res.n_query_codes,
                "lookup_ms": round(res.lookup_s * 1000, 2),
                "match": match_to_dict(best) if best else None,
                "candidates": [match_to_dict(m) for m in res.matches],
            }
            opts = orjson.OPT_INDENT_2 if pretty and len(clips) == 1 else 0
            sys.stdout.buffer.write(orjson.dumps(out, option=opts) + b"\n")
            sys.stdout.flush()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        raise typer.Exit(code) from None
    except AnalyzerError as exc:
        _err(str(exc))
        raise typer.Exit(getattr(exc, "exit_code", EXIT_INPUT)) from None
    finally:
        catalog.close()
    raise typer.Exit(EXIT_INPUT if failed else EXIT_OK)


@catalog_app.command("features", help="Spotify's audio-features object of each file (one JSON object per file; "
                     "jsonl for many). Audio files are analysed; analysis documents (.json) are read as they are.")
def features_command(
    paths: Annotated[list[Path], typer.Argument(help="Audio files, folders, or analysis documents (.json).",
                                                show_default=False)],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="json: one object (one file); jsonl: one per line.")
                   ] = Format.jsonl,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON (one file only).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: number of cores).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    import orjson

    from .audio import DecodeParams
    from .document import audio_features_object, track_id

    docs = [p for p in paths if p.suffix.lower() == ".json" and p.is_file()]
    audio = [p for p in paths if p not in docs]
    job_list = _jobs(audio, out_dir=None, plot_dir=None, plot=None, plot_html=None,
                     plot_format=PlotFormat.png) if audio else []
    if fmt is Format.json and len(docs) + len(job_list) != 1:
        _usage("--format json takes one input; use --format jsonl for several")
    opts = orjson.OPT_INDENT_2 if pretty and len(docs) + len(job_list) == 1 else 0
    failed = internal = False

    def emit(doc: dict) -> None:
        sid = track_id(doc["track"]["sample_md5"]) if doc["track"].get("sample_md5") else None
        sys.stdout.buffer.write(orjson.dumps(audio_features_object(doc, track_id=sid), option=opts) + b"\n")
        sys.stdout.flush()

    try:
        for path in docs:
            try:
                doc = orjson.loads(path.read_bytes())
                emit(doc)
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                _err(f"{quote_path(path)}: not an analysis document ({one_line(str(exc))})")
                failed = True
        if job_list:
            from .batch import run_jobs

            options = _run_options(jobs=jobs, offset=0.0, duration=0.0, max_duration=DecodeParams().max_duration_s,
                                   allow_truncated=False, pretty=False, fmt=Format.jsonl, embed_model=None,
                                   embedder="", device="cpu")
            workers = min(jobs or _cores(), len(job_list))
            with closing(run_jobs(job_list, options, workers=workers)) as results:
                for res in results:
                    if res.error:
                        _err(res.error)
                        if debug and res.detail:
                            sys.stderr.write(res.detail)
                        failed, internal = True, internal or res.internal
                        continue
                    emit(orjson.loads(res.document))
    except BrokenPipeError:
        quiet_stdout()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        raise typer.Exit(code) from None
    raise typer.Exit(EXIT_INTERNAL if internal else EXIT_INPUT if failed else EXIT_OK)


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
) -> None:
    from .batch import RunOptions
    from .audio import DecodeParams

    if jobs < 1 or poll <= 0 or concurrency < 1 or not 0 < port < 65536 or max_duration <= 0:
        _usage("--jobs and --concurrency must be >= 1, --poll and --max-duration > 0, --port within 1..65535")
    try:
        from .serve import build_app, is_loopback, serve
    except ImportError as exc:  # starlette or uvicorn missing from a partial install
        _usage(f"analyze serve needs starlette and uvicorn ({exc.name} is missing): "
               "pip install 'starlette>=0.37' 'uvicorn>=0.29'")
    if not is_loopback(host) and not token:
        _usage(f"--host {host} takes connections from other machines: give --token (or ANALYZE_TOKEN) too")
    from .library import Indexer, open_library

    recommend = None
    if model is not None:
        recommend = _or_exit(lambda: _load_recommender(model))
    store = _or_exit(lambda: open_library(library, db))
    indexer = Indexer(store, RunOptions(decode=DecodeParams(max_duration_s=max_duration)), workers=jobs, poll_s=poll)
    app_ = build_app(store, indexer, token=token, recommend=recommend, concurrency=concurrency)
    sys.stderr.write(one_line(f"serving {library} at http://{host}:{port}/ (the page; the API under /v1/; "
                              f"database: {store.kind})") + "\n")
    sys.stderr.flush()
    indexer.start()
    try:
        serve(app_, host=host, port=port)
    finally:
        indexer.stop(timeout_s=1.0)
        store.close()


# the composition root: `recommender` builds on the analyzer, so the analyzer reaches it by name only here
RECOMMENDER_LOADER = "recommender.serving"


def _load_recommender(model: Path):
    import importlib

    return importlib.import_module(RECOMMENDER_LOADER).load(model)


SUBCOMMANDS = ("index", "identify", "features", "serve")
CATALOG_COMMANDS = SUBCOMMANDS  # the old name


def main() -> None:
    _install_stop_handlers()
    try:
        if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
            # `analyze index ...` / `identify ...` / `serve ...`; anything else is a path to analyze
            catalog_app()
            return
        app()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        sys.exit(code)


if __name__ == "__main__":
    main()
