"""Documents as a table: one Parquet row per track (`analyze --format parquet -o OUT.parquet`).

Each row holds the track's path and id, its ``sample_md5``, the main ``track`` fields as
columns (for queries that need no JSON parsing) and the whole document as JSON text.  Written
and read by pyarrow when it is installed, by Spark otherwise (a folder of part files, as Spark
writes it; both readers read either).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .batch import Job
from .errors import InputError, quote_path

# (column, Spark SQL type); the track fields keep the document's names
COLUMNS = (
    ("path", "string"), ("id", "string"), ("sample_md5", "string"),
    ("duration", "double"), ("tempo", "double"), ("tempo_confidence", "double"),
    ("key", "int"), ("key_confidence", "double"), ("mode", "int"), ("mode_confidence", "double"),
    ("time_signature", "int"), ("time_signature_confidence", "double"), ("loudness", "double"),
    ("document", "string"),
)
TRACK_COLUMNS = tuple(name for name, _ in COLUMNS[3:-1])


def document_row(job: Job, document: bytes) -> dict:
    """The table row of one analysed file.

    Parameters
    ----------
    job : Job
        The file: its source is the ``path``; its output path without ``.json`` the ``id``
        (unique in a batch: ``rock/song``).
    document : bytes
        The serialized document, as written to a ``.json`` file.

    Returns
    -------
    dict
        One value per `COLUMNS` entry (None where the document lacks the field).
    """
    import orjson

    doc = orjson.loads(document)
    track = doc.get("track", {})
    row = {"path": os.fsdecode(job.source), "id": job.output_rel.with_suffix("").as_posix(),
           "sample_md5": track.get("sample_md5")}
    row.update({name: track.get(name) for name in TRACK_COLUMNS})
    row["document"] = document.decode("utf-8")
    return row


def _has_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(rows: list[dict], path: Path, *, spark=None) -> None:
    """Write `rows` to `path` at once: a reader sees the old table or the new one, never half.

    Parameters
    ----------
    rows : list of dict
        `document_row` results.
    path : Path
        ``OUT.parquet``: one file (pyarrow) or a folder of part files (Spark).
    spark : SparkSession, optional
        A running session; without pyarrow and without one, a local session is started.

    Raises
    ------
    OSError
        The table cannot be written (the CLI reports it).
    AnalyzerError
        Neither pyarrow nor a usable Spark.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        if _has_pyarrow():
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"string": pa.string(), "double": pa.float64(), "int": pa.int32()}
            schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        else:
            _write_with_spark(rows, tmp, spark)
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        if path.is_dir() and not path.is_symlink():
            os.replace(path, old)  # a folder cannot be replaced by a rename: move it aside first
        os.replace(tmp, path)
        _remove(old)
    finally:
        _remove(tmp)


def _write_with_spark(rows: list[dict], tmp: Path, spark) -> None:
    owned = False
    if spark is None:
        from .spark_engine import DEFAULT_MASTER, start_session

        spark, owned = start_session(DEFAULT_MASTER, "analyze-parquet")
    try:
        schema = ", ".join(f"`{name}` {kind}" for name, kind in COLUMNS)
        values = [tuple(r[name] for name, _ in COLUMNS) for r in rows]
        spark.createDataFrame(values, schema).coalesce(1).write.parquet("file://" + os.path.abspath(tmp))
    finally:
        if owned:
            spark.stop()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def read_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    """The documents of a table `write_parquet` wrote, in row order (read at once: errors come now).

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
    if _has_pyarrow():
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["document"])
        texts = table.column("document").to_pylist()
    else:
        texts = _read_with_spark(path)
    return ((f"{quote_path(path)}:{n}", (text or "").encode("utf-8")) for n, text in enumerate(texts, start=1))


def _read_with_spark(path: Path) -> list[str]:
    from .spark_engine import DEFAULT_MASTER, source_uri, start_session

    spark, owned = start_session(DEFAULT_MASTER, "read-parquet")
    try:
        df = spark.read.parquet(source_uri(path))
        if "document" not in df.columns:
            raise InputError(f"{quote_path(path)}: no document column (not written by analyze --format parquet)")
        return [r["document"] for r in df.select("document").collect()]
    finally:
        if owned:
            spark.stop()
