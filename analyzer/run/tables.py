"""Documents as a table: one Parquet row per track (`analyze --format parquet -o OUT.parquet`).

Each row holds the track's path and id, its ``sample_md5``, its source's size and modification
time (what resume compares), the main ``track`` fields as columns (for queries that need no JSON
parsing) and the whole document as JSON text.  Written and read by pyarrow when it is installed,
by Spark otherwise (a folder of part files, as Spark writes it; both readers read either).

A run writes its table beside the old one, rows as they come (a row group, or a Spark part file,
per batch: the driver holds one batch, never the table), then swaps it in by rename: a reader,
or a run that is stopped, sees the old table or the new one, never half.  A rerun keeps the rows
of files that have not changed since (`plan_table`) and analyses only the others.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from analyzer.run.batch import Job, source_stamp
from analyzer.errors import AnalyzerError, InputError, quote_path

# (column, Spark SQL type); the track fields keep the document's names
COLUMNS = (
    ("path", "string"), ("id", "string"), ("sample_md5", "string"),
    ("source_size", "bigint"), ("source_mtime_ns", "bigint"),
    ("duration", "double"), ("tempo", "double"), ("tempo_confidence", "double"),
    ("key", "int"), ("key_confidence", "double"), ("mode", "int"), ("mode_confidence", "double"),
    ("time_signature", "int"), ("time_signature_confidence", "double"), ("loudness", "double"),
    ("document", "string"),
)
TRACK_COLUMNS = tuple(name for name, _ in COLUMNS[5:-1])
NAMES = tuple(name for name, _ in COLUMNS)
# a batch is written when it holds this many rows or document bytes, whichever comes first: an hour-long
# track's document is ~5 MB, a 3-minute one's ~0.3 MB, so the driver holds at most ~64 MB of them
BATCH_ROWS = 256
BATCH_BYTES = 64 << 20


def document_row(job: Job, document: bytes, stamp: tuple[int, int] | None = None) -> dict:
    """The table row of one analysed file.

    Parameters
    ----------
    job : Job
        The file: its source is the ``path``; its output path without ``.json`` the ``id``
        (unique in a batch: ``rock/song``).
    document : bytes
        The serialized document, as written to a ``.json`` file.
    stamp : (int, int), optional
        The source's (size, modification time in ns) before it was read (`batch.source_stamp`):
        ``source_size`` and ``source_mtime_ns``; None leaves them null (the row is never kept
        by a rerun).

    Returns
    -------
    dict
        One value per `COLUMNS` entry (None where the document lacks the field).
    """
    import orjson

    doc = orjson.loads(document)
    track = doc.get("track", {})
    size, mtime_ns = stamp if stamp is not None else (None, None)
    row = {"path": os.fsdecode(job.source), "id": job.output_rel.with_suffix("").as_posix(),
           "sample_md5": track.get("sample_md5"), "source_size": size, "source_mtime_ns": mtime_ns}
    kinds = dict(COLUMNS)
    row.update({name: _typed(track.get(name), kinds[name]) for name in TRACK_COLUMNS})
    row["document"] = document.decode("utf-8")
    return row


def _typed(value, kind: str):
    # Spark's DataFrame refuses an int in a double column (and pyarrow a float in an int one)
    if value is None:
        return None
    return float(value) if kind == "double" else int(value)


def has_pyarrow() -> bool:
    """Whether pyarrow can be imported (it writes and reads the table; Spark does otherwise)."""
    try:
        import pyarrow.parquet  # noqa: F401
        import pyarrow.dataset  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class TablePlan:
    """What a run does with an existing table (`plan_table`).

    Attributes
    ----------
    todo : list of Job
        The jobs to analyse: new files, changed ones, and all with ``--force``.
    kept : dict of str to str
        Source path -> id of each row carried over unchanged (its id as this run names the file).
    stamps : dict of str to (int, int)
        Each job's source (size, modification time in ns) as seen now, by source path.
    stale : int
        Rows of the old table not carried over: files changed since, and files no longer
        among the inputs.
    gone : int
        Of those, rows of files no longer among the inputs (their rows leave the table).
    """

    todo: list[Job]
    kept: dict[str, str]
    stamps: dict[str, tuple[int, int]]
    stale: int
    gone: int

    @property
    def unchanged(self) -> bool:
        """Nothing to analyse and no row to drop: the old table is already this run's table."""
        return not self.todo and not self.stale


def plan_table(path: Path, jobs: list[Job], *, force: bool = False, embedding_model_id: str | None = None,
               spark=None, use_pyarrow: bool | None = None) -> TablePlan:
    """Decide which rows of the table at `path` are up to date, and which jobs remain.

    A row is kept when its ``path`` is a job's source whose size and modification time are the
    ones the row recorded (and, with an embedding model, whose document carries that model's
    embedding): the local folder's rule (an output newer than its source), for a table, which
    has no file time per row.

    Parameters
    ----------
    path : Path
        ``OUT.parquet``; missing: everything is to do.
    jobs : list of Job
        This run's inputs.
    force : bool
        Keep nothing (the table is rewritten from this run's analyses).
    embedding_model_id : str, optional
        The model whose embedding every document must carry.
    spark : SparkSession, optional
        Reads the table where pyarrow is not used (a local session is started without one).
    use_pyarrow : bool, optional
        Read with pyarrow (True) or Spark (False); None: pyarrow when installed.

    Returns
    -------
    TablePlan

    Raises
    ------
    InputError
        `path` exists but is not a table `analyze --format parquet` wrote.
    """
    path = Path(path)
    recover(path)
    stamps = {os.fsdecode(j.source): st for j in jobs if (st := source_stamp(j.source)) is not None}
    if force or not path.exists():
        # (with --force the old rows are all replaced; `stale` only matters when nothing is to do)
        return TablePlan(list(jobs), {}, stamps, 0, 0)
    ids = {os.fsdecode(j.source): j.output_rel.with_suffix("").as_posix() for j in jobs}
    kept: dict[str, str] = {}
    stale = gone = 0
    for src, size, mtime_ns, model in _stamp_rows(path, spark, use_pyarrow, embedding_model_id is not None):
        current = stamps.get(src)
        if (current is not None and current == (size, mtime_ns) and src not in kept
                and (embedding_model_id is None or model == embedding_model_id)):
            kept[src] = ids[src]
        else:
            stale += 1
            gone += src not in ids
    todo = [j for j in jobs if os.fsdecode(j.source) not in kept]
    return TablePlan(todo, kept, stamps, stale, gone)


def _use_arrow(use_pyarrow: bool | None) -> bool:
    return has_pyarrow() if use_pyarrow is None else use_pyarrow


def _not_a_table(path: Path, exc: BaseException) -> InputError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return InputError(f"{quote_path(path)}: not a Parquet table, or a damaged one ({first}); give a new name, "
                      "or remove it")


def _stamp_rows(path: Path, spark, use_pyarrow: bool | None, with_model: bool) -> Iterator[tuple]:
    """(path, source_size, source_mtime_ns, embedding model or None) of each row, a batch at a time.

    A table written before rows carried their source's stamp yields None stamps (nothing is kept).
    """
    if _use_arrow(use_pyarrow):
        yield from _stamp_rows_arrow(path, with_model)
    else:
        with table_session(spark, use_pyarrow=False) as session:
            yield from _stamp_rows_spark(session, path, with_model)


def _arrow_dataset(path: Path):
    """The table as a pyarrow dataset: one file (pyarrow's) or a folder of parts (Spark's: its
    ``_SUCCESS`` and ``.crc`` files are left out by the dataset's hidden-name rule)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    # pages written with a checksum (`_ArrowParts` writes one) are checked as they are read
    checked = ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))
    try:
        return ds.dataset(str(path), format=checked)
    except (pa.ArrowException, OSError) as exc:
        raise _not_a_table(path, exc) from None


def _arrow_batches(dataset, columns: list[str]):
    # small batches, little read-ahead: a batch of documents is the most the driver holds
    return dataset.to_batches(columns=columns, batch_size=64, batch_readahead=1, fragment_readahead=1)


def _stamp_rows_arrow(path: Path, with_model: bool) -> Iterator[tuple]:
    """Every column of every row is read (a batch at a time) and each document parsed: a damaged
    table is refused here, not trusted for resume and copied into the new one."""
    import orjson
    import pyarrow as pa

    dataset = _arrow_dataset(path)
    have = set(dataset.schema.names)
    if "path" not in have:
        raise InputError(f"{quote_path(path)}: no path column (not written by analyze --format parquet); "
                         "give a new name, or remove it")
    columns = [c for c in NAMES if c in have]
    row = 0
    try:
        for batch in _arrow_batches(dataset, columns):
            cols = {name: batch.column(name).to_pylist() for name in ("path", "source_size", "source_mtime_ns",
                                                                      "document") if name in have}
            for i, src in enumerate(cols["path"]):
                row += 1
                size = cols["source_size"][i] if "source_size" in cols else None
                mtime_ns = cols["source_mtime_ns"][i] if "source_mtime_ns" in cols else None
                model = None
                if "document" in cols:
                    try:
                        doc = orjson.loads(cols["document"][i] or "")
                    except orjson.JSONDecodeError as exc:
                        raise InputError(f"{quote_path(path)}: a damaged table (row {row}: its document is not "
                                         f"JSON: {exc}); remove it, or give a new name, to analyse again") from None
                    model = doc.get("embedding_model") if isinstance(doc, dict) else None
                yield src, size, mtime_ns, model if with_model else None
    except (pa.ArrowException, OSError) as exc:
        raise _not_a_table(path, exc) from None


def _stamp_rows_spark(spark, path: Path, with_model: bool) -> Iterator[tuple]:
    from pyspark.sql import functions as F

    from analyzer.run.spark_engine import source_uri

    try:
        df = spark.read.parquet(source_uri(path))
    except Exception as exc:  # noqa: BLE001 - Spark's AnalysisException, or the JVM's: one line
        raise _not_a_table(path, exc) from None
    if "path" not in df.columns:
        raise InputError(f"{quote_path(path)}: no path column (not written by analyze --format parquet); "
                         "give a new name, or remove it")

    def column(name, kind="bigint"):
        return F.col(name) if name in df.columns else F.lit(None).cast(kind)

    model = (F.get_json_object(F.col("document"), "$.embedding_model") if with_model and "document" in df.columns
             else F.lit(None).cast("string"))
    rows = df.select(F.col("path"), column("source_size"), column("source_mtime_ns"), model)
    # a partition at a time: the driver never holds the whole table's stamps as Spark rows
    for row in rows.toLocalIterator():
        yield tuple(row)


@contextmanager
def table_session(spark=None, *, use_pyarrow: bool | None = None):
    """The Spark session tables are read and written with: None where pyarrow does it.

    Parameters
    ----------
    spark : SparkSession, optional
        A running session (the engine's): used as is, and left running.
    use_pyarrow : bool, optional
        None: pyarrow when installed.

    Yields
    ------
    SparkSession or None
        `spark`, a local session started here (stopped on exit), or None with pyarrow.

    Raises
    ------
    AnalyzerError
        Without pyarrow, `spark` is a cluster's; or a local session cannot start.
    """
    if _use_arrow(use_pyarrow):
        yield None
        return
    if spark is not None:
        master = str(spark.sparkContext.master)
        if not master.startswith("local"):
            # Spark's writer runs on the executors: a file:// table would land on their own disks
            raise AnalyzerError(f"--format parquet with a cluster ({master}) needs pyarrow on the driver "
                                "(pip install pyarrow): the driver writes the table itself")
        yield spark
        return
    from analyzer.run.spark_engine import DEFAULT_MASTER, start_session

    session, owned = start_session(DEFAULT_MASTER, "analyze-parquet")
    try:
        yield session
    finally:
        if owned:
            session.stop()


class TableWriter:
    """Writes a table beside `path` as rows come, then swaps it in whole (`commit`).

    Rows are written a batch at a time (`BATCH_ROWS` rows or `BATCH_BYTES` of documents): a row
    group of one Parquet file (pyarrow), or a part file of a folder (Spark).  Until `commit` the
    old table at `path` is untouched; `abort` (or leaving the ``with`` block on an exception)
    removes what was written.

    Parameters
    ----------
    path : Path
        ``OUT.parquet``.
    spark : SparkSession, optional
        Writes where pyarrow is not used (required then: see `table_session`).
    use_pyarrow : bool, optional
        Write with pyarrow (True) or Spark (False); None: pyarrow when installed.
    batch_rows, batch_bytes : int
        When a batch is written.
    """

    def __init__(self, path: Path, *, spark=None, use_pyarrow: bool | None = None, batch_rows: int = BATCH_ROWS,
                 batch_bytes: int = BATCH_BYTES) -> None:
        self.path = Path(path)
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        recover(self.path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        _remove(self.tmp)
        if _use_arrow(use_pyarrow):
            self._parts = _ArrowParts(self.tmp)
        else:
            if spark is None:
                raise AnalyzerError("writing a table without pyarrow needs a Spark session (tables.table_session)")
            self._parts = _SparkParts(self.tmp, spark)
        self._rows: list[dict] = []
        self._bytes = 0
        self.rows_written = 0
        self._open = True

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._open:
            self.abort()

    def keep(self, old: Path, ids: dict[str, str]) -> None:
        """Copy the rows of the table at `old` whose ``path`` is in `ids`, each with its id there.

        Parameters
        ----------
        old : Path
            The table being replaced.
        ids : dict of str to str
            Source path -> id (`TablePlan.kept`); a path found twice is copied once.
        """
        if ids:
            self.flush()
            self.rows_written += self._parts.copy(Path(old), ids)

    def add(self, row: dict) -> None:
        """Add one `document_row`; a batch is written when it is full."""
        self._rows.append(row)
        self._bytes += len(row["document"] or "")
        if len(self._rows) >= self.batch_rows or self._bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the rows added since the last batch."""
        if self._rows:
            self._parts.write(self._rows)
            self.rows_written += len(self._rows)
            self._rows, self._bytes = [], 0

    def commit(self) -> None:
        """Write what is left, then put the new table at `path` in place of the old one.

        Raises
        ------
        OSError, AnalyzerError
            It could not be written; the old table is kept (call `abort`).
        """
        self.flush()
        self._parts.close()
        _swap_in(self.tmp, self.path)
        self._open = False

    def abort(self) -> None:
        """Drop what was written; the old table stays."""
        self._open = False
        try:
            self._parts.close()
        except Exception:  # noqa: BLE001 - it is being thrown away: a failure to close changes nothing
            pass
        _remove(self.tmp)


def _arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "double": pa.float64(), "int": pa.int32(), "bigint": pa.int64()}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS])


class _ArrowParts:
    """One Parquet file, one row group per batch (pyarrow's ParquetWriter)."""

    def __init__(self, tmp: Path) -> None:
        import pyarrow.parquet as pq

        self.schema = _arrow_schema()
        # page checksums: a table damaged later is refused when read, not trusted (`_arrow_dataset`)
        self.writer = pq.ParquetWriter(str(tmp), self.schema, write_page_checksum=True)

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def copy(self, old: Path, ids: dict[str, str]) -> int:
        import pyarrow as pa

        dataset = _arrow_dataset(old)
        columns = [name for name in NAMES if name in dataset.schema.names]
        seen: set[str] = set()
        n = 0
        for batch in _arrow_batches(dataset, columns):
            paths = batch.column("path").to_pylist()
            # the first row of each kept path (set.add returns None: the test is "not seen before")
            take = [p in ids and p not in seen and not seen.add(p) for p in paths]
            if not any(take):
                continue
            part = pa.Table.from_batches([batch]).filter(pa.array(take))
            values = {name: part.column(name) for name in columns}
            values["id"] = pa.array([ids[p] for p in part.column("path").to_pylist()], pa.string())
            table = pa.table({name: values.get(name, pa.nulls(part.num_rows)) for name in NAMES})
            self.writer.write_table(table.cast(self.schema))
            n += part.num_rows
        return n

    def close(self) -> None:
        self.writer.close()


class _SparkParts:
    """A folder of Parquet part files, one per batch (Spark's writer, appending)."""

    def __init__(self, tmp: Path, spark) -> None:
        self.spark = spark
        self.uri = "file://" + os.path.abspath(tmp)
        self.schema = ", ".join(f"`{name}` {kind}" for name, kind in COLUMNS)
        self.empty = True

    def _append(self, df) -> None:
        df.coalesce(1).write.mode("append").parquet(self.uri)
        self.empty = False

    def write(self, rows: list[dict]) -> None:
        self._append(self.spark.createDataFrame([tuple(r[name] for name in NAMES) for r in rows], self.schema))

    def copy(self, old: Path, ids: dict[str, str]) -> int:
        from pyspark.sql import functions as F

        from analyzer.run.spark_engine import source_uri

        old_df = self.spark.read.parquet(source_uri(old)).dropDuplicates(["path"])
        keys = self.spark.createDataFrame(list(ids.items()), "path string, id string")
        # the old rows of the kept paths, each with the id this run gives it (a join inside Spark: the
        # documents never pass through the driver)
        kept = old_df.drop("id").join(keys, "path", "inner")
        kept = kept.select(*[(F.col(name) if name in kept.columns else F.lit(None)).cast(kind).alias(name)
                             for name, kind in COLUMNS])
        self._append(kept)
        return len(ids)  # (plan_table kept only paths the old table holds)

    def close(self) -> None:
        if self.empty:  # no row at all: still a table, with the columns
            self._append(self.spark.createDataFrame([], self.schema))


def _swap_in(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path`: one rename where both are files; a folder (Spark's table), which a rename
    cannot replace, is moved aside first, and `recover` puts it back if the process dies between."""
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    _remove(old)
    if path.exists() and (path.is_dir() or tmp.is_dir()) and not path.is_symlink():
        os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<kind>tmp|old)")


def recover(path: Path) -> None:
    """Undo what a writer of `path` that died left beside it.

    A table moved aside (``.OUT.parquet.PID.old``) while no table is at `path` is put back (the
    process died between its two renames); a temporary table or a moved-aside one of a process
    that no longer runs is removed.

    Parameters
    ----------
    path : Path
        ``OUT.parquet``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for entry in sorted(path.parent.iterdir()):
        m = _LEFTOVER.fullmatch(entry.name)
        if m is None or m["name"] != path.name or _running(int(m["pid"])):
            continue
        if m["kind"] == "old" and not path.exists():
            os.replace(entry, path)
        else:
            _remove(entry)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process's own leftovers are its to replace
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def read_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    """The documents of a table `TableWriter` wrote (read at once: errors come now).

    Parameters
    ----------
    path : Path
        The ``.parquet`` file or folder.

    Returns
    -------
    iterator of (str, bytes)
        Where the row is (``OUT.parquet:3``, for messages) and its document's JSON text.

    Raises
    ------
    InputError
        The path is missing, or holds no ``document`` column.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{quote_path(path)}: no such file or folder")
    if has_pyarrow():
        import pyarrow as pa

        dataset = _arrow_dataset(path)
        if "document" not in dataset.schema.names:
            raise InputError(f"{quote_path(path)}: no document column (not written by analyze --format parquet)")
        try:
            texts = dataset.to_table(columns=["document"]).column("document").to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise _not_a_table(path, exc) from None
    else:
        texts = _read_with_spark(path)
    return ((f"{quote_path(path)}:{n}", (text or "").encode("utf-8")) for n, text in enumerate(texts, start=1))


def _read_with_spark(path: Path) -> list[str]:
    from analyzer.run.spark_engine import source_uri

    with table_session(use_pyarrow=False) as spark:
        df = spark.read.parquet(source_uri(path))
        if "document" not in df.columns:
            raise InputError(f"{quote_path(path)}: no document column (not written by analyze --format parquet)")
        return [r["document"] for r in df.select("document").collect()]
