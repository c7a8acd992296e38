"""`analyze --engine spark` on local[2]: the same documents as the local engine, the same outputs,
failures and exit codes; `--format parquet` and `recommend ingest` of it.

One SparkSession for the module (Spark takes ~10 s to start); the CLI joins it instead of starting
its own.  Skipped where pyspark or Java is missing.
"""

from __future__ import annotations

import builtins
import os
import shutil
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from analyzer.cli import app

ROOT = Path(__file__).resolve().parents[1]
# per file, what differs between two runs of the same analysis: when it ran and how long it took
RUN_DEPENDENT = ("timestamp", "analysis_time")


def _no_spark_reason() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install '.[spark]')"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "Java 17 is not installed"
    return None


needs_spark = pytest.mark.skipif(_no_spark_reason() is not None, reason=str(_no_spark_reason()))


@pytest.fixture(scope="module")
def spark():
    from pyspark import cloudpickle

    import _spark_fakes
    from analyzer.run.spark_engine import start_session

    # the workers import the analyzer from this checkout, as the driver does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cloudpickle.register_pickle_by_value(_spark_fakes)
    session, _ = start_session("local[2,2]", "analyze-tests")  # 2 cores; a failed task is tried twice
    yield session
    session.stop()


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """Three 4-second songs in two folders and three formats (wav, mp3 with tags, ogg)."""
    from fixtures import synth

    d = tmp_path_factory.mktemp("music")
    (d / "sub").mkdir()
    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=4)
    synth.encode(d / "click.wav", x, sr)
    x, sr, _ = synth.chord_progression(key="D", mode="major", seconds=4)
    synth.encode(d / "sub" / "chords.mp3", x, sr, metadata=synth.TAGS)
    x, sr, _ = synth.click_track(bpm=100, beats_per_bar=3, seconds=4)
    synth.encode(d / "waltz.ogg", x, sr)
    return d


@pytest.fixture(scope="module")
def local_out(music, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    code, err = _cli([str(music), "-o", str(out), "--jobs", "1"])
    assert code == 0, err
    return out


def _cli(args) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stderr


def _without_run_dependent(doc: bytes) -> bytes:
    d = orjson.loads(doc)
    for key in RUN_DEPENDENT:
        d["meta"].pop(key)
    return orjson.dumps(d)


@needs_spark
@pytest.mark.spark
def test_spark_writes_the_local_engines_documents(spark, music, local_out, tmp_path):
    out = tmp_path / "out"
    code, err = _cli([str(music), "-o", str(out), "--engine", "spark"])
    assert code == 0, err
    assert "3 analyzed, 0 failed, 0 up to date (skipped)" in err and "2 workers)" in err
    files = sorted(p.relative_to(local_out) for p in local_out.rglob("*.json"))
    assert files == sorted(p.relative_to(out) for p in out.rglob("*.json")) and len(files) == 3
    for rel in files:
        a, b = (local_out / rel).read_bytes(), (out / rel).read_bytes()
        # our own text output: byte for byte, but for when it ran and how long it took
        assert _without_run_dependent(a) == _without_run_dependent(b), rel
        assert a.count(b"\n") == b.count(b"\n")
    # resume: what is up to date is skipped before anything goes to Spark
    code, err = _cli([str(music), "-o", str(out), "--engine", "spark"])
    assert code == 0 and "0 analyzed, 0 failed, 3 up to date (skipped)" in err, err


@needs_spark
@pytest.mark.spark
def test_a_corrupt_file_fails_alone(spark, music, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(music, src)
    (src / "notes.mp3").write_bytes(b"plain text, not audio\n" * 20)
    out = tmp_path / "out"
    code, err = _cli([str(src), "-o", str(out), "--engine", "spark", "--partitions", "1"])
    assert code == 1, err  # as the local engine: an input failed
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "notes.mp3: not a readable audio file" in errors[0], err
    assert "3 analyzed, 1 failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.rglob("*.json")) == ["chords.json", "click.json", "waltz.json"]


@needs_spark
@pytest.mark.spark
def test_a_crashed_worker_is_retried_then_fails_its_file_only(spark, tmp_path, monkeypatch):
    import _spark_fakes
    import analyzer.run.batch as batch

    monkeypatch.setattr(batch, "run_one", _spark_fakes.crash_on_name)
    monkeypatch.setattr(batch, "worker_resources", _spark_fakes.no_setup)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b-crash.wav", "c.wav"):
        (src / name).write_bytes(b"RIFF" + name.encode())
    out = tmp_path / "out"
    # one task for the three files: the task fails for good, then each file is tried in a task of its own
    code, err = _cli([str(src), "-o", str(out), "--engine", "spark", "--partitions", "1"])
    assert code == 3, err  # as the local engine gives for a crashed worker
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "b-crash.wav: Spark task failed 2 times: Python worker exited unexpectedly" in errors[0]
    assert "2 analyzed, 1 failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "c.json"]
    assert orjson.loads((out / "a.json").read_bytes()) == {"fake": True, "bytes": 9}
    attempts = (src / ".attempts").read_text().split()
    assert attempts.count("b-crash.wav") == 4  # 2 tries of the group's task, 2 of its own


@needs_spark
@pytest.mark.spark
def test_parquet_table_holds_the_documents_and_ingest_reads_it(spark, music, local_out, tmp_path):
    from analyzer.run.tables import COLUMNS, read_documents
    from recommender.cli import app as recommend_app

    table = tmp_path / "tracks.parquet"
    code, err = _cli([str(music), "--format", "parquet", "-o", str(table), "--engine", "spark"])
    assert code == 0 and "3 analyzed" in err, err
    df = spark.read.parquet(str(table))
    assert df.columns == [name for name, _ in COLUMNS]
    rows = {r["id"]: r for r in df.collect()}
    assert sorted(rows) == ["click", "sub/chords", "waltz"]
    for rid, row in rows.items():
        doc = orjson.loads(row["document"])
        local = (local_out / f"{rid}.json").read_bytes()
        assert _without_run_dependent(row["document"].encode()) == _without_run_dependent(local)
        assert row["path"] == str(music / Path(doc["meta"]["filename"]).relative_to(music))
        assert row["sample_md5"] == doc["track"]["sample_md5"]
        assert (row["tempo"], row["key"], row["mode"], row["time_signature"]) == tuple(
            doc["track"][k] for k in ("tempo", "key", "mode", "time_signature"))
    assert len(list(read_documents(table))) == 3
    result = CliRunner().invoke(recommend_app, ["ingest", "--model", str(tmp_path / "m"), str(table)])
    assert result.exit_code == 0, result.stderr
    assert "3 analyses ingested, 0 skipped" in result.stderr


def test_engine_spark_without_pyspark_is_one_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    code, err = _cli([str(tmp_path), "-o", str(tmp_path / "out"), "--engine", "spark"])
    assert code == 1 and err.startswith("error: --engine spark needs pyspark") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,words", [
    (["--spark-master", "local[2]"], "need --engine spark"),
    (["--engine", "spark", "--partitions", "-1"], "--partitions must be >= 0"),
    (["--engine", "spark", "--plot-dir", "plots"], "need --engine local"),
    (["--format", "parquet"], "-o OUT.parquet"),
    (["--format", "parquet", "-o", "out"], "-o OUT.parquet"),
])
def test_engine_usage_errors(tmp_path, args, words):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    code, err = _cli([str(tmp_path), *args])
    assert code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err


def test_a_python_worker_makes_its_resources_once_per_setup_and_options():
    from analyzer.run.batch import RunOptions
    from analyzer.run.spark_engine import cached_resources

    calls = []

    def setup(options):
        calls.append(options)
        return object()

    first = cached_resources(RunOptions(), setup)
    assert cached_resources(RunOptions(), setup) is first and len(calls) == 1
    assert cached_resources(RunOptions(pretty=True), setup) is not first and len(calls) == 2


# --- Hadoop file system URIs as inputs (file:// here: the Hadoop local file system) ----------------------------

def _file_uri(path: Path) -> str:
    # as a user types it: Hadoop paths are not percent-encoded (Path.as_uri would write a space as %20)
    return "file://" + str(path)


@needs_spark
@pytest.mark.spark
def test_a_folder_given_as_a_uri_is_listed_by_the_local_folders_rules(spark, tmp_path):
    from analyzer.run.batch import HadoopFile, collect_inputs
    from analyzer.errors import InputError
    from analyzer.run.spark_engine import SparkEngine

    src = tmp_path / "in put"  # a space: the URI is unescaped, as Hadoop's Path takes it
    for rel in ("a.mp3", "a.wav", "sub/b.FLAC", "sub/deeper/c.ogg", ".hidden/d.mp3", "sub/.e.mp3", "notes.txt",
                "x.mp3/y.wav"):  # (a folder named like a file: its file is found, the folder is not)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"RIFF" + rel.encode())
    os.mkfifo(src / "pipe.mp3")
    local = collect_inputs([src])
    with SparkEngine("local[2]") as engine:  # joins the tests' session
        remote = collect_inputs([_file_uri(src), _file_uri(src / "sub" / "b.FLAC")], list_uri=engine.list_uri)
        with pytest.raises(InputError, match="a FIFO"):  # given alone: refused, as the local engine does
            collect_inputs([_file_uri(src / "pipe.mp3")], list_uri=engine.list_uri)
    n = len(local.jobs)
    assert [j.output_rel for j in remote.jobs[:n]] == [j.output_rel for j in local.jobs]
    assert [j.output_rel.as_posix() for j in local.jobs] == [
        "a.mp3.json", "a.wav.json", "sub/b.json", "sub/deeper/c.json", "x.mp3/y.json"]
    for r, loc in zip(remote.jobs, local.jobs):
        assert isinstance(r.source, HadoopFile) and r.source.uri == _file_uri(loc.source)
        assert r.source.local_path == loc.source
        st = loc.source.stat()
        assert r.source.size == st.st_size
        assert abs(r.source.mtime_ns - st.st_mtime_ns) < 1_000_000  # Hadoop keeps milliseconds
    # a file given alone: its own name
    assert remote.jobs[n].output_rel == Path("b.json") and len(remote.jobs) == n + 1
    # the FIFO is skipped with the local engine's reason
    assert len(local.skipped) == len(remote.skipped) == 1
    assert local.skipped[0].split(": skipped: ")[1] == remote.skipped[0].split(": skipped: ")[1]


@needs_spark
@pytest.mark.spark
def test_a_file_uri_folder_gives_the_local_paths_documents_and_resumes(spark, music, local_out, tmp_path):
    src = tmp_path / "music"
    shutil.copytree(music, src)
    out = tmp_path / "out"
    code, err = _cli([_file_uri(src), "-o", str(out), "--engine", "spark"])
    assert code == 0 and "3 analyzed, 0 failed, 0 up to date (skipped)" in err, err
    files = sorted(p.relative_to(local_out) for p in local_out.rglob("*.json"))
    assert files == sorted(p.relative_to(out) for p in out.rglob("*.json")) and len(files) == 3
    for rel in files:
        a, b = orjson.loads((local_out / rel).read_bytes()), orjson.loads((out / rel).read_bytes())
        # the file's name is the URI it was read from; all else is the local engine's, but for when it ran
        assert b["meta"].pop("filename") == _file_uri(src / Path(a["meta"].pop("filename")).relative_to(music))
        assert _without_run_dependent(orjson.dumps(a)) == _without_run_dependent(orjson.dumps(b)), rel
    # resume by the listing's modification times: nothing goes to Spark ...
    code, err = _cli([_file_uri(src), "-o", str(out), "--engine", "spark"])
    assert code == 0 and "0 analyzed, 0 failed, 3 up to date (skipped)" in err, err
    # ... but a source changed since its document was written
    later = (out / "click.json").stat().st_mtime + 60
    os.utime(src / "click.wav", (later, later))
    code, err = _cli([_file_uri(src), "-o", str(out), "--engine", "spark"])
    assert code == 0 and "1 analyzed, 0 failed, 2 up to date (skipped)" in err, err


@needs_spark
@pytest.mark.spark
@pytest.mark.parametrize("case,words", [
    ("missing", "no such file or folder"),
    ("empty", "folder holds no audio files"),
    ("scheme", "cannot list it (UnsupportedFileSystemException"),
])
def test_a_uri_that_gives_no_audio_is_one_line(spark, tmp_path, case, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here\n")
    uri = {"missing": _file_uri(tmp_path / "nope"), "empty": _file_uri(tmp_path / "empty"),
           "scheme": "nosuchfs://host/music"}[case]
    code, err = _cli([uri, "-o", str(tmp_path / "out"), "--engine", "spark"])
    assert code == 1 and err.startswith(f"error: {uri}: ") and words in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_uri_with_the_local_engine_says_to_use_spark(tmp_path):
    code, err = _cli(["hdfs://namenode/music", "-o", str(tmp_path / "out")])
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: hdfs://namenode/music: a Hadoop file system URI") and "--engine spark" in err


# --- --format parquet: resume, and the two writers -------------------------------------------------------------

def _has_pyarrow() -> bool:
    from analyzer.run.tables import has_pyarrow

    return has_pyarrow()


needs_pyarrow = pytest.mark.skipif(not _has_pyarrow(), reason="pyarrow is not installed (pip install '.[test]')")
WRITERS = [pytest.param(False, id="spark-writer"), pytest.param(True, id="pyarrow-writer", marks=needs_pyarrow)]


def _table_rows(spark, table: Path) -> dict[str, dict]:
    return {r["path"]: r.asDict() for r in spark.read.parquet(str(table)).collect()}


@needs_spark
@pytest.mark.spark
@pytest.mark.parametrize("arrow", WRITERS)
def test_parquet_rerun_keeps_unchanged_rows_and_analyses_the_rest(spark, music, tmp_path, monkeypatch, arrow):
    import analyzer.run.tables as tables

    monkeypatch.setattr(tables, "has_pyarrow", lambda: arrow)
    src = tmp_path / "music"
    shutil.copytree(music, src)
    table = tmp_path / "tracks.parquet"
    args = [str(src), "--format", "parquet", "-o", str(table), "--engine", "spark"]
    code, err = _cli(args)
    assert code == 0 and "3 analyzed, 0 failed, 0 up to date (skipped)" in err, err
    assert table.is_file() == arrow  # pyarrow writes one file; Spark a folder of parts
    first = _table_rows(spark, table)
    click, chords, waltz = (str(src / n) for n in ("click.wav", "sub/chords.mp3", "waltz.ogg"))
    assert sorted(first) == sorted([click, chords, waltz])
    assert first[click]["source_mtime_ns"] == os.stat(click).st_mtime_ns
    # nothing changed: nothing analysed, the table not rewritten
    code, err = _cli(args)
    assert code == 0 and "0 analyzed, 0 failed, 3 up to date (skipped)" in err, err
    assert _table_rows(spark, table) == first
    # a changed file and a new one are analysed; the others' rows are carried over as they were
    later = time.time() + 60
    os.utime(click, (later, later))
    shutil.copy(waltz, src / "sub" / "waltz2.ogg")
    code, err = _cli(args)
    assert code == 0 and "2 analyzed, 0 failed, 2 up to date (skipped)" in err, err
    second = _table_rows(spark, table)
    assert sorted(second) == sorted([click, chords, waltz, str(src / "sub" / "waltz2.ogg")])
    assert second[chords] == first[chords] and second[waltz] == first[waltz]  # (their analysis times too)
    assert second[click]["source_mtime_ns"] == os.stat(click).st_mtime_ns != first[click]["source_mtime_ns"]
    assert second[str(src / "sub" / "waltz2.ogg")]["id"] == "sub/waltz2"
    # a file no longer among the inputs leaves the table
    os.unlink(chords)
    code, err = _cli(args)
    assert code == 0 and "0 analyzed, 0 failed, 3 up to date (skipped)" in err, err
    assert "1 row(s) of files no longer among the inputs are left out" in err
    third = _table_rows(spark, table)
    assert sorted(third) == sorted([click, waltz, str(src / "sub" / "waltz2.ogg")]) and third[waltz] == first[waltz]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary table left


@needs_spark
@pytest.mark.spark
@needs_pyarrow
def test_both_table_writers_write_the_same_rows(spark, music, local_out, tmp_path):
    import pyarrow.dataset as ds

    from analyzer.run.batch import Job, source_stamp
    from analyzer.run.tables import COLUMNS, TableWriter, document_row

    rows = []
    for out in sorted(local_out.rglob("*.json")):
        document = out.read_bytes()
        job = Job(Path(orjson.loads(document)["meta"]["filename"]), out.relative_to(local_out))
        rows.append(document_row(job, document, source_stamp(job.source)))
    tables = {}
    for arrow in (True, False):
        tables[arrow] = tmp_path / f"{'arrow' if arrow else 'spark'}.parquet"
        with TableWriter(tables[arrow], spark=spark, use_pyarrow=arrow, batch_rows=2) as writer:
            for row in rows:
                writer.add(row)
            writer.commit()
    schemas = {arrow: ds.dataset(str(t), format="parquet").schema for arrow, t in tables.items()}
    assert schemas[True].names == schemas[False].names == [name for name, _ in COLUMNS]
    assert [f.type for f in schemas[True]] == [f.type for f in schemas[False]]
    by_path = {r["path"]: r for r in rows}
    doubles = {name for name, kind in COLUMNS if kind == "double"}
    for arrow, t in tables.items():
        # read by the other library than the one that wrote it
        read = ([r.asDict() for r in spark.read.parquet(str(t)).collect()] if arrow
                else ds.dataset(str(t), format="parquet").to_table().to_pylist())
        assert sorted(r["path"] for r in read) == sorted(by_path)
        for r in read:
            want = by_path[r["path"]]
            # doubles go through Parquet's 64 bits unchanged; the tolerance only guards a reader's conversion
            assert {k: v for k, v in r.items() if k not in doubles} == {k: v for k, v in want.items() if k not in doubles}
            assert [r[k] for k in sorted(doubles)] == pytest.approx([want[k] for k in sorted(doubles)], rel=1e-15)
    # each writer carries rows over from the other's table, with the ids it is given
    keep = {rows[0]["path"]: "renamed", rows[2]["path"]: rows[2]["id"]}
    for arrow in (True, False):
        copy = tmp_path / f"kept-{arrow}.parquet"
        with TableWriter(copy, spark=spark, use_pyarrow=arrow) as writer:
            writer.keep(tables[not arrow], keep)
            writer.commit()
        kept = {r["path"]: r.asDict() for r in spark.read.parquet(str(copy)).collect()}
        assert sorted(kept) == sorted(keep) and {p: r["id"] for p, r in kept.items()} == keep
        assert kept[rows[2]["path"]]["document"] == rows[2]["document"]
