"""`--format parquet`'s table without Spark: which rows a rerun keeps (`plan_table`), writing a batch at a
time, and that the old table survives a failed or interrupted write.  pyarrow writes here; the Spark
writer and the equivalence of the two are in test_spark.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from analyzer.run.batch import Job, source_stamp
from analyzer.cli import app
from analyzer.errors import InputError
from analyzer.run.tables import COLUMNS, TableWriter, document_row, has_pyarrow, plan_table, recover

needs_pyarrow = pytest.mark.skipif(not has_pyarrow(), reason="pyarrow is not installed (pip install '.[test]')")


def _job(tmp_path: Path, name: str, content: bytes = b"RIFF....WAVE") -> Job:
    src = tmp_path / "music" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    return Job(src, Path(name).with_suffix(".json"))


def _doc(tempo: float = 120.0, model: str | None = None) -> bytes:
    doc = {"track": {"sample_md5": "0" * 32, "duration": 4, "tempo": tempo, "key": 2, "mode": 1,
                     "time_signature": 4, "loudness": -12.5}}
    if model is not None:
        doc["embedding_model"] = model
    return orjson.dumps(doc)


def _write(path: Path, rows: list[dict], **kwargs) -> None:
    with TableWriter(path, use_pyarrow=True, **kwargs) as writer:
        for row in rows:
            writer.add(row)
        writer.commit()


def _read(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r["path"])


@needs_pyarrow
def test_a_rerun_keeps_the_rows_of_unchanged_files_only(tmp_path):
    a, b, c = (_job(tmp_path, n) for n in ("a.wav", "sub/b.wav", "c.wav"))
    gone = _job(tmp_path, "gone.wav")
    table = tmp_path / "t.parquet"
    _write(table, [document_row(j, _doc(model="m1" if j is b else None), source_stamp(j.source)) for j in (a, b, c, gone)])
    c.source.write_bytes(b"RIFF....WAVE and more")  # changed: another size
    plan = plan_table(table, [a, b, c], use_pyarrow=True)
    assert plan.kept == {str(a.source): "a", str(b.source): "sub/b"}
    assert plan.todo == [c] and (plan.stale, plan.gone) == (2, 1) and not plan.unchanged
    # with an embedding model, only the rows whose document carries that model's embedding
    assert plan_table(table, [a, b, c], embedding_model_id="m1", use_pyarrow=True).kept == {str(b.source): "sub/b"}
    assert plan_table(table, [a, b, c], force=True, use_pyarrow=True).todo == [a, b, c]
    # the kept rows are carried over with the id this run gives them (the folder given differently)
    moved = [Job(a.source, Path("music/a.json")), Job(b.source, Path("music/sub/b.json"))]
    plan = plan_table(table, moved, use_pyarrow=True)
    assert plan.kept == {str(a.source): "music/a", str(b.source): "music/sub/b"} and plan.todo == []
    out = tmp_path / "t2.parquet"
    with TableWriter(out, use_pyarrow=True) as writer:
        writer.keep(table, plan.kept)
        writer.commit()
    rows = _read(out)
    assert [r["id"] for r in rows] == ["music/a", "music/sub/b"]
    assert [r["document"] for r in rows] == [r["document"] for r in _read(table) if r["path"] != str(c.source)
                                            and r["path"] != str(gone.source)]


@needs_pyarrow
def test_nothing_to_do_leaves_the_table_as_it_is(tmp_path):
    jobs = [_job(tmp_path, n) for n in ("a.wav", "b.wav")]
    table = tmp_path / "t.parquet"
    _write(table, [document_row(j, _doc(), source_stamp(j.source)) for j in jobs])
    plan = plan_table(table, jobs, use_pyarrow=True)
    assert plan.unchanged and plan.todo == [] and len(plan.kept) == 2


@needs_pyarrow
def test_a_table_without_source_stamps_keeps_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    job = _job(tmp_path, "a.wav")
    table = tmp_path / "old.parquet"  # as the first version wrote it: no source_size, source_mtime_ns
    pq.write_table(pa.table({"path": [str(job.source)], "id": ["a"], "document": [_doc().decode()]}), table)
    plan = plan_table(table, [job], use_pyarrow=True)
    assert plan.todo == [job] and plan.kept == {} and plan.stale == 1


@needs_pyarrow
def test_a_file_that_is_not_a_table_is_refused_in_one_line(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    table = tmp_path / "t.parquet"
    table.write_text("not parquet\n")
    with pytest.raises(InputError, match="not a Parquet table"):
        plan_table(table, [Job(tmp_path / "a.wav", Path("a.json"))], use_pyarrow=True)
    result = CliRunner().invoke(app, [str(tmp_path), "--format", "parquet", "-o", str(table)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {table}: not a Parquet table") and "Traceback" not in result.stderr
    assert table.read_text() == "not parquet\n"


@needs_pyarrow
def test_rows_are_written_a_batch_at_a_time(tmp_path):
    import pyarrow.parquet as pq

    jobs = [_job(tmp_path, f"{k}.wav") for k in range(5)]
    table = tmp_path / "t.parquet"
    _write(table, [document_row(j, _doc(tempo=100.0 + k), source_stamp(j.source)) for k, j in enumerate(jobs)],
           batch_rows=2)
    assert pq.ParquetFile(table).num_row_groups == 3  # 2 + 2 + 1: the writer held two rows at most
    rows = _read(table)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert pq.read_schema(table).names == [name for name, _ in COLUMNS]
    # a stored double is read back as written (Parquet keeps all 64 bits)
    assert rows[3]["tempo"] == pytest.approx(103.0, abs=0) and rows[3]["duration"] == pytest.approx(4.0, abs=0)
    assert rows[3]["source_size"] == jobs[3].source.stat().st_size
    assert rows[3]["source_mtime_ns"] == jobs[3].source.stat().st_mtime_ns


@needs_pyarrow
def test_a_failed_write_keeps_the_old_table(tmp_path):
    job = _job(tmp_path, "a.wav")
    table = tmp_path / "t.parquet"
    _write(table, [document_row(job, _doc(), source_stamp(job.source))])
    before = table.read_bytes()
    with pytest.raises(RuntimeError):
        with TableWriter(table, use_pyarrow=True, batch_rows=1) as writer:
            writer.add(document_row(job, _doc(tempo=90.0), source_stamp(job.source)))
            raise RuntimeError("the disk filled up")
    assert table.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["music", "t.parquet"]  # no temporary table left


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_recover_puts_back_a_table_moved_aside_by_a_run_that_died(tmp_path):
    table = tmp_path / "t.parquet"
    dead = _dead_pid()
    aside = tmp_path / f".t.parquet.{dead}.old"  # Spark's folder table, moved aside just before the rename
    aside.mkdir()
    (aside / "part-0.parquet").write_bytes(b"PAR1")
    (tmp_path / f".t.parquet.{dead}.tmp").mkdir()  # the new table that never got its place
    running = tmp_path / f".t.parquet.{os.getppid()}.tmp"  # another run's, still going: not ours to remove
    running.write_bytes(b"")
    other = tmp_path / f".u.parquet.{dead}.old"  # another table's
    other.write_bytes(b"")
    recover(table)
    assert (table / "part-0.parquet").read_bytes() == b"PAR1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name, "t.parquet"])
    recover(table)  # a table in place: nothing more to do
    assert (table / "part-0.parquet").exists()
