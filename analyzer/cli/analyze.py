"""`analyze FILES`: the main command (documents, tables, plots; local or Spark)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated, Optional

import typer

from analyzer.console import progress_bar, quiet_stdout
from analyzer.errors import AnalyzerError, one_line, quote_path
from analyzer.cli.common import (
    _err, _say, _stopped, _version, _usage, _or_exit, _cores, PlotFormat, Format, Engine, _run_options, _jobs,
    EXIT_OK, EXIT_INPUT, EXIT_INTERNAL,
)


app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None
)


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
    from analyzer.run.batch import Resources

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
    from analyzer.run.spark_engine import DEFAULT_MASTER, SparkEngine  # pyspark is optional: imported for --engine spark only

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


def _run_single(job, options, resources, fmt: Format, debug: bool) -> int:
    from analyzer.run.batch import run_one

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

    from analyzer.run.batch import is_up_to_date, write_atomic

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
    from analyzer.run.batch import output_name_problem, run_jobs

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

    from analyzer.run.tables import TableWriter, has_pyarrow, plan_table, table_session

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
    except OSError as exc:  # its folder cannot be made or written (/proc, a parent that is a file, read-only)
        why = os.strerror(exc.errno) if exc.errno else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            why = "a name on its path is a file, not a folder"
        _err(f"cannot write {quote_path(path)}: {why}")
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
        from analyzer.run.tables import document_row

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


