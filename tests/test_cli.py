"""The command line end to end: stdout, batches, resume, exit codes, one-line errors."""

from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.cli import app
from analyzer.document import validate

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "demo" / "demo.ogg"
ANALYZE = [sys.executable, "-c", "from analyzer.cli import main; main()"]


def run_inproc(args):
    result = CliRunner().invoke(app, [*args, "--jobs", "1"])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(stderr: str, words: str):
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and words in lines[0], stderr
    assert "Traceback" not in stderr


def test_demo_song_to_stdout_subprocess():
    proc = subprocess.run([*ANALYZE, str(DEMO)], capture_output=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    validate(doc)
    assert proc.stderr.decode().strip() == ""  # stdout carries only the document, stderr stays quiet
    # the demo's truth (fixtures/demo/README.md): 96 BPM, 4/4, F major
    assert doc["track"]["tempo"] == pytest.approx(96, rel=0.04)
    assert (doc["track"]["key"], doc["track"]["mode"]) == (5, 1)
    assert doc["track"]["time_signature"] == 4


def test_version_and_help():
    code, out, _ = run_inproc(["--version"])
    assert code == 0 and out.startswith("analyze ")
    code, out, _ = run_inproc(["--help"])
    assert code == 0 and "--format" in out


@pytest.mark.parametrize(
    "name,words",
    [
        ("bad_text_as_mp3", "not a readable audio file"),
        ("bad_empty_wav", "empty file"),
        ("bad_truncated_mp3", "truncated"),
        ("bad_truncated_mp3_300b", "audio"),
        ("short_clip", "at least"),
    ],
)
def test_bad_files(fx, name, words):
    code, out, err = run_inproc([fx[name]["path"]])
    assert code == 1 and out == ""
    assert_one_line_error(err, words)


def test_missing_path_and_empty_folder(tmp_path):
    code, out, err = run_inproc([str(tmp_path / "nothing.mp3")])
    assert code == 1 and out == ""
    assert_one_line_error(err, "no such file")
    (tmp_path / "empty").mkdir()
    code, _, err = run_inproc([str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert code == 1
    assert_one_line_error(err, "no audio files")
    assert not (tmp_path / "out").exists()


def test_unreadable_file(fx, monkeypatch):
    # root reads any file regardless of its mode bits, so refuse the open itself
    target = fx["click_120_wav"]["path"]
    real_open = builtins.open

    def guarded(file, *a, **k):
        if str(file) == str(target):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    code, out, err = run_inproc([target])
    assert code == 1 and out == ""
    assert_one_line_error(err, "permission denied")


def test_usage_errors_exit_2(fx, tmp_path):
    code, _, err = run_inproc([fx["click_120_wav"]["path"], fx["chords_d_major"]["path"]])
    assert code == 2 and "-o OUT_DIR" in err  # several documents need a folder or jsonl
    result = CliRunner().invoke(app, [fx["click_120_wav"]["path"], "--offset", "-1"])
    assert result.exit_code == 2


def test_silence_is_a_valid_document(fx):
    code, out, err = run_inproc([fx["silence"]["path"]])
    assert code == 0, err
    doc = json.loads(out)
    validate(doc)
    assert doc["beats"] == [] and doc["track"]["tempo"] == 0 and doc["track"]["key"] == -1


def test_excerpt_options(fx):
    code, out, _ = run_inproc([fx["click_120_4-4"]["path"], "--offset", "5", "--duration", "10"])
    assert code == 0
    t = json.loads(out)["track"]
    assert t["offset_seconds"] == 5.0 and t["window_seconds"] == pytest.approx(10.0, abs=0.01)
    assert t["duration"] == pytest.approx(10.0, abs=0.01)


@pytest.fixture()
def music_dir(fx, tmp_path):
    """10 files in nested folders, one of them bad, names with spaces and non-ASCII."""
    root = tmp_path / "music"
    picks = ["click_120_mp3", "click_120_flac", "click_120_ogg", "chords_d_major", "chords_a_minor",
             "tone_440_6dbfs", "wav_mono_8k", "unicode_name", "silence", "bad_text_as_mp3"]
    for i, name in enumerate(picks):
        src = Path(fx[name]["path"])
        dst = root / ("a/b" if i % 2 else "c") / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return root


def test_batch_writes_9_reports_1_and_resumes(music_dir, tmp_path):
    out = tmp_path / "out"
    # the real entry point, with two worker processes
    proc = subprocess.run([*ANALYZE, str(music_dir), "-o", str(out), "--jobs", "2"], capture_output=True,
                          timeout=600, text=True)
    assert proc.returncode == 1, proc.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*.json"))
    assert len(written) == 9
    assert Path("a/b/click_120.json") in written or Path("c/click_120.json") in written
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "notes.mp3" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "9 analyzed, 1 failed" in proc.stderr
    for p in out.rglob("*.json"):
        validate(json.loads(p.read_bytes()))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}

    code, _, err = run_inproc([str(music_dir), "-o", str(out)])
    assert code == 1
    assert "0 analyzed, 1 failed, 9 up to date" in err
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}

    code, _, err = run_inproc([str(music_dir), "-o", str(out), "--force"])
    assert "9 analyzed, 1 failed" in err


def test_jsonl_stream(music_dir):
    code, out, err = run_inproc([str(music_dir / "c"), "--format", "jsonl"])
    lines = out.splitlines()
    assert code == 0, err
    assert len(lines) == len(list((music_dir / "c").iterdir()))
    for line in lines:
        validate(json.loads(line))


def test_output_path_that_is_a_file(fx, tmp_path):
    blocker = tmp_path / "out.json"
    blocker.write_text("keep me")
    code, _, err = run_inproc([fx["click_120_wav"]["path"], "-o", str(blocker)])
    assert code == 2
    assert_one_line_error(err, "not a folder")
    assert blocker.read_text() == "keep me"  # nothing the user had is lost


def test_write_failure_is_reported_and_the_batch_goes_on(music_dir, tmp_path, monkeypatch):
    import analyzer.run.batch as batch

    real = batch.write_atomic

    def full_disk(path, data):
        if "chords_d_major" in path.name:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(batch, "write_atomic", full_disk)
    out = tmp_path / "out"
    code, _, err = run_inproc([str(music_dir), "-o", str(out)])
    assert code == 1
    assert any(l.startswith("error: cannot write") and "No space left" in l for l in err.splitlines())
    assert "Traceback" not in err
    assert len(list(out.rglob("*.json"))) == 8  # 10 inputs: one bad file, one unwritable output

