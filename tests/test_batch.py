"""Batches that nothing can hang, kill or corrupt (issue 15): signals, dead workers, odd files, odd names.

Most tests run the real entry point with the analysis replaced by `_cli_fakes` (a task that
answers at once, never ends, or kills its worker), so they take seconds and what each worker
does is decided by the file's name, not by timing.  Waiting for a condition has a deadline;
no assertion is about how long something took.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _cli_fakes import ANALYZE, FAKE_ANALYZE, ROOT, fake_run_one, marker
from analyzer.cli import app

DEADLINE_S = 60  # generous: a loaded 2-core machine starts Python slowly; no assertion depends on it

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and POSIX signals")


def _files(folder: Path, names) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        (folder / n).write_bytes(b"RIFF not really audio: the fakes never read it")
        out.append(folder / n)
    return out


def _wait_for(cond, what: str, timeout_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _kill_all(pids) -> None:
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start(cmd, tmp_path: Path, args) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [*cmd, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(err, "wb"),
    )
    return proc, err


def _error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.strip()]


def inproc(args, monkeypatch=None, *, fake: bool = True):
    """The CLI in this process with --jobs 1 (the serial path), the analysis faked unless told."""
    if fake:
        import analyzer.run.batch as batch

        monkeypatch.setattr(batch, "run_one", fake_run_one)
    result = CliRunner().invoke(app, [*map(str, args), "--jobs", "1"])
    return result.exit_code, result.stdout, result.stderr


# --- 3, 4: Ctrl-C, SIGTERM and kill -9 ----------------------------------------------------------


def _busy_batch(tmp_path):
    """A batch whose first file is done and whose two workers each hold a task that never ends."""
    src = tmp_path / "music"
    a, b, c, d = _files(src, ["a.wav", "b_block.wav", "c_block.wav", "d.wav"])
    out = tmp_path / "out"
    proc, err = _start(FAKE_ANALYZE, tmp_path, [src, "-o", out, "--jobs", "2"])
    try:
        _wait_for(
            lambda: (out / "a.json").exists() and marker(b, "started").exists() and marker(c, "started").exists(),
            "a.json written and both workers busy",
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    pids = [int(marker(x, "started").read_text()) for x in (b, c)]
    return proc, err, out, pids


@posix_only
@pytest.mark.parametrize(
    "signals,code,word",
    [([signal.SIGINT], 130, "interrupted"), ([signal.SIGINT, signal.SIGINT], 130, "interrupted"),
     ([signal.SIGTERM], 143, "terminated")],
    ids=["ctrl-c", "ctrl-c-twice", "sigterm"],
)
def test_interrupt_stops_the_workers_at_once_and_keeps_finished_outputs(tmp_path, signals, code, word):
    proc, err, out, pids = _busy_batch(tmp_path)
    try:
        for s in signals:
            proc.send_signal(s)
        try:
            rc = proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"still running {DEADLINE_S} s after {[s.name for s in signals]}")
        stderr = err.read_text()
        assert rc == code, stderr
        assert "Traceback" not in stderr
        lines = _error_lines(stderr)
        if len(signals) == 1:
            # the tasks in progress never end by themselves: only stopping them lets the batch exit
            assert len(lines) == 1 and lines[0].startswith(f"error: {word}"), stderr
            assert "stopped" in lines[0] and "kept" in lines[0], stderr
        else:
            # a second Ctrl-C may land before or after the message: at most that one line
            assert len(lines) <= 1 and all(word in l for l in lines), stderr
        _wait_for(lambda: not any(_alive(p) for p in pids), "the workers to end")
        assert (out / "a.json").exists() and not (out / "d.json").exists()
        assert not list(out.rglob("*.tmp"))
    finally:
        _kill_all(pids)


@posix_only
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    proc, _, _, pids = _busy_batch(tmp_path)
    try:
        proc.kill()
        proc.wait()
        _wait_for(lambda: not any(_alive(p) for p in pids), "the orphaned workers to end")
    finally:
        _kill_all(pids)


@posix_only
def test_watch_parent_ends_an_orphan_without_the_kernels_help(tmp_path):
    # the portable fallback alone (no prctl): a middle process starts a child that only polls
    # its parent pid, then the middle is killed
    ready = tmp_path / "child.pid"
    child = (
        "import os, sys, time; from analyzer.run.workers import watch_parent; "
        "watch_parent(os.getppid(), interval_s=0.05); "
        f"open({str(ready)!r} + '.part', 'w').write(str(os.getpid())); os.replace({str(ready)!r} + '.part', {str(ready)!r}); "
        "time.sleep(600)"
    )
    middle = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", middle], cwd=ROOT)
    pid = None
    try:
        _wait_for(ready.exists, "the child to start watching")
        pid = int(ready.read_text())
        proc.kill()
        proc.wait()
        _wait_for(lambda: not _alive(pid), "the orphan to end")
    finally:
        proc.kill()
        proc.wait()
        if pid is not None:
            _kill_all([pid])


# --- 5: a worker killed by the kernel -------------------------------------------------------------


@posix_only
def test_a_killed_worker_fails_its_file_and_the_batch_goes_on(tmp_path):
    names = [f"{chr(ord('a') + i)}.wav" for i in range(12)]
    names[2] = "c_oom.wav"
    src = tmp_path / "music"
    _files(src, names)
    out = tmp_path / "out"
    proc = subprocess.run([*FAKE_ANALYZE, str(src), "-o", str(out), "--jobs", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "c_oom.wav" in errors[0] and "worker killed" in errors[0] and "out of memory" in errors[0]
    assert "11 analyzed, 1 failed" in proc.stderr
    assert sorted(p.name for p in out.glob("*.json")) == sorted(n.replace(".wav", ".json") for n in names if "oom" not in n)


@posix_only
def test_index_goes_on_after_a_killed_worker(tmp_path):
    src = tmp_path / "music"
    _files(src, ["a.wav", "b_oom.wav", "c.wav", "d.wav"])
    db = tmp_path / "catalog.db"
    proc = subprocess.run([*FAKE_ANALYZE, "index", str(src), "--db", str(db), "--jobs", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "b_oom.wav" in errors[0] and "worker killed" in errors[0], proc.stderr
    assert "3 indexed, 1 failed" in proc.stderr


def test_death_reasons():
    from analyzer.run.workers import death_reason

    oom = death_reason(-signal.SIGKILL)
    assert "SIGKILL" in oom.reason and "out of memory" in oom.reason and not oom.internal
    segv = death_reason(-signal.SIGSEGV)
    assert "SIGSEGV" in segv.reason and segv.internal
    assert "code 1" in death_reason(1).reason


# --- 6: FIFOs and other files that are not regular ------------------------------------------------


@posix_only
def test_a_fifo_given_directly_is_refused_at_once(tmp_path):
    fifo = tmp_path / "song.mp3"
    os.mkfifo(fifo)
    proc = subprocess.run([*ANALYZE, str(fifo)], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "FIFO" in lines[0] and "not a regular file" in lines[0]


@posix_only
def test_a_fifo_behind_a_symlink_in_a_folder_is_skipped_with_a_reason(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    src = tmp_path / "music"
    src.mkdir()
    (src / "x.mp3").symlink_to(fifo)
    proc = subprocess.run([*ANALYZE, str(src), "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=DEADLINE_S)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "x.mp3" in proc.stderr and "not a regular file" in proc.stderr and "FIFO" in proc.stderr


@posix_only
def test_collect_inputs_keeps_regular_files_and_says_why_others_are_skipped(tmp_path):
    from analyzer.run.batch import collect_inputs

    src = tmp_path / "music"
    (real,) = _files(src, ["real.wav"])
    os.mkfifo(src / "pipe.mp3")
    os.mkfifo(tmp_path / "elsewhere")
    (src / "link.ogg").symlink_to(tmp_path / "elsewhere")
    (src / "folder.mp3").mkdir()  # a folder named like a file is just a folder
    found = collect_inputs([src])
    assert [j.source for j in found.jobs] == [real]
    assert len(found.skipped) == 2
    assert all("not a regular file" in s and "FIFO" in s for s in found.skipped)
    assert any("pipe.mp3" in s for s in found.skipped) and any("link.ogg" in s for s in found.skipped)


@posix_only
def test_index_skips_a_fifo_and_indexes_the_rest(tmp_path):
    import numpy as np
    import soundfile as sf

    from analyzer.stages import fingerprint as fpm

    if fpm.chromaprint_string(np.zeros(22050 * 4, dtype=np.float32), 22050)[0] is None:
        pytest.skip("libchromaprint is not installed")
    src = tmp_path / "music"
    src.mkdir()
    sr = 22050
    rng = np.random.default_rng(0)
    t = np.arange(6 * sr) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.05 * rng.standard_normal(len(t))
    sf.write(src / "real.wav", x.astype(np.float32), sr)
    os.mkfifo(tmp_path / "pipe")
    (src / "x.mp3").symlink_to(tmp_path / "pipe")
    db = tmp_path / "catalog.db"
    proc = subprocess.run([*ANALYZE, "index", str(src), "--db", str(db), "--jobs", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "x.mp3" in proc.stderr and "not a regular file" in proc.stderr
    assert "1 indexed, 0 failed" in proc.stderr and "Traceback" not in proc.stderr


# --- 7: two inputs, one output ----------------------------------------------------------------------


def test_two_inputs_that_would_write_one_output_are_refused_with_both_names(tmp_path, monkeypatch):
    (x1,) = _files(tmp_path / "d1", ["x.wav"])
    (x2,) = _files(tmp_path / "d2", ["x.wav"])
    out = tmp_path / "out"
    code, _, err = inproc([x1, x2, "-o", out], monkeypatch)
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(x1) in lines[0] and str(x2) in lines[0]
    assert not out.exists()  # refused before anything ran
    # as folders: d1/sub/y.wav and d2/sub/y.wav both map to sub/y.json
    _files(tmp_path / "e1" / "sub", ["y.wav"])
    _files(tmp_path / "e2" / "sub", ["y.wav"])
    code, _, err = inproc([tmp_path / "e1", tmp_path / "e2", "-o", out], monkeypatch)
    assert code == 2 and "y.wav" in err, err
    # nothing is written to files with jsonl on stdout: no clash
    code, stdout, err = inproc([x1, x2, "--format", "jsonl"], monkeypatch)
    assert code == 0 and len(stdout.splitlines()) == 2, err


# --- 8: long names ------------------------------------------------------------------------------------


def test_write_atomic_takes_a_name_near_the_limit(tmp_path):
    from analyzer.run.batch import write_atomic

    target = tmp_path / ("n" * 250 + ".json")  # 255 bytes
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_long_names_are_written_or_refused_before_the_analysis(tmp_path, monkeypatch):
    src = tmp_path / "music"
    fits, too_long = _files(src, ["n" * 241 + ".wav", "m" * 251 + ".wav"])  # outputs: 246 and 256 bytes
    out = tmp_path / "out"
    code, _, err = inproc([src, "-o", out], monkeypatch)
    assert code == 1, err
    assert (out / ("n" * 241 + ".json")).exists()
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "too long" in errors[0], err
    assert not marker(too_long, "started").exists()  # refused up front, not analysed for nothing
    assert "1 analyzed, 1 failed" in err


# --- 9: names that would break the one-line error -----------------------------------------------------


NASTY = "x\n\x1b[2Jy.mp3"


def _assert_escaped_one_line(err: str, words: str):
    assert "\x1b" not in err
    errors = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in errors if not l.startswith(("0 analyzed", "1 analyzed"))]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert "\\n" in errors[0] and "\\x1b" in errors[0] and words in errors[0], err


def test_a_nasty_name_stays_on_one_escaped_line(tmp_path, monkeypatch):
    bad = tmp_path / "music" / NASTY
    bad.parent.mkdir()
    bad.write_text("not audio")
    code, out, err = inproc([bad], fake=False)  # one file: the decoder's own message
    assert code == 1 and out == ""
    _assert_escaped_one_line(err, "not a readable audio file")
    code, _, err = inproc([bad.parent, "-o", tmp_path / "out"], fake=False)  # a batch
    assert code == 1
    _assert_escaped_one_line(err, "not a readable audio file")


def test_a_nasty_name_in_a_clash_is_quoted(tmp_path, monkeypatch):
    (a,) = _files(tmp_path / "d1", [NASTY])
    (b,) = _files(tmp_path / "d2", [NASTY])
    code, _, err = inproc([a, b, "-o", tmp_path / "out"], monkeypatch)
    assert code == 2
    _assert_escaped_one_line(err, "d1")


def test_quote_path():
    from analyzer.errors import one_line, quote_path

    assert quote_path(Path("music/a b/song.mp3")) == "'music/a b/song.mp3'"
    assert quote_path("plain/song_1.mp3") == "plain/song_1.mp3"
    assert quote_path("x\n\x1b[31m'.mp3") == "'x\\n\\x1b[31m\\'.mp3'"
    assert quote_path(os.fsdecode(b"caf\xe9.mp3")) == "'caf\\xe9.mp3'"  # undecodable byte shown as such
    assert quote_path("\u202etxt.mp3") == "'\\u202etxt.mp3'"  # a right-to-left override cannot reorder the line
    assert one_line("a\nb\x1b[0m c") == "a\\nb\\x1b[0m c"


# --- 10: permissions ------------------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_follow_the_umask(tmp_path, monkeypatch, umask, mode):
    from analyzer.run.batch import write_atomic

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.json", b"{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
        (src,) = _files(tmp_path / "music", ["s.wav"])
        code, _, err = inproc([src.parent, "-o", tmp_path / "out"], monkeypatch)
        assert code == 0, err
        assert stat.S_IMODE((tmp_path / "out" / "s.json").stat().st_mode) == mode
    finally:
        os.umask(old)


def test_a_worker_pool_setup_runs_once_per_worker_and_each_task_gets_its_result(tmp_path):
    import _cli_fakes
    from analyzer.run.workers import WorkerPool

    with WorkerPool(2, setup=_cli_fakes.counting_setup, setup_args=(tmp_path,)) as pool:
        out = list(pool.imap(_cli_fakes.report_resources, [(i,) for i in range(12)]))
    assert [o[3] for o in out] == [i * i for i in range(12)]  # in input order
    assert all(made_in == ran_in for made_in, ran_in, _, _ in out)  # a worker's own resources
    tokens = {o[2] for o in out}
    assert len(list(tmp_path.glob("setup-*"))) == 2 and tokens <= {p.name[6:] for p in tmp_path.glob("setup-*")}


@posix_only
def test_interrupt_saves_the_table_with_the_files_finished_so_far(tmp_path):
    from analyzer.run.tables import has_pyarrow

    if not has_pyarrow():
        pytest.skip("pyarrow is not installed (pip install '.[test]'); without it Spark writes the table")
    import pyarrow.parquet as pq

    src = tmp_path / "music"
    a, b = _files(src, ["a.wav", "b_block.wav"])
    table = tmp_path / "t.parquet"
    # --jobs 1: each file is analysed in this process, in order, so a's row is in when b's task starts
    proc, err = _start(FAKE_ANALYZE, tmp_path, [src, "--format", "parquet", "-o", table, "--jobs", "1"])
    try:
        _wait_for(lambda: marker(b, "started").exists(), "b's task to start")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.read_text()
    assert rc == 130 and "Traceback" not in stderr, stderr
    lines = _error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    assert f"the table {table} holds the files finished so far" in lines[0]
    assert pq.read_table(table).column("path").to_pylist() == [str(a)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["music", "stderr.txt", "t.parquet"]


def test_a_table_that_cannot_be_written_stops_the_batch_and_keeps_the_old_one(tmp_path, monkeypatch):
    import analyzer.run.tables as tables

    if not tables.has_pyarrow():
        pytest.skip("pyarrow is not installed (pip install '.[test]'); without it Spark writes the table")
    src = tmp_path / "music"
    _files(src, ["a.wav", "b.wav"])
    table = tmp_path / "t.parquet"
    code, _, err = inproc([src, "--format", "parquet", "-o", table], monkeypatch)
    assert code == 0 and "2 analyzed" in err, err
    before = table.read_bytes()
    for f in src.glob("*.wav"):
        os.utime(f, (time.time() + 60, time.time() + 60))  # both changed: both to do again

    def disk_full(self, row):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tables.TableWriter, "add", disk_full)
    code, _, err = inproc([src, "--format", "parquet", "-o", table], monkeypatch)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == f"error: cannot write {table}: No space left on device; the old table is kept"
    assert "0 analyzed, 2 failed, 0 up to date (skipped)" in err
    assert table.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["music", "t.parquet"]
