"""`recommend` against hostile input (issue 15): tables that are not text, odd line ends, endless
lines, counts past float32, saved models whose data is damaged, and model versions piling up."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "recommender.cli", *map(str, args)], capture_output=True, input=stdin)


def _one_line_error(r, *, code: int = 1) -> str:
    """The CLI's contract for a refusal: exit code, one `error:` line, no traceback."""
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert b"Traceback" not in r.stderr, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _plays_table(n_users: int = 30, n_items: int = 40, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = ["user\titem\tplays"]
    for u in range(n_users):
        for it in rng.choice(n_items, size=10, replace=False):
            rows.append(f"u{u:02d}\tt{it:02d}\t{int(rng.integers(1, 100))}")
    return rows


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small fitted model folder (30 listeners, 40 items, terms) to copy and damage."""
    d = tmp_path_factory.mktemp("fitted")
    (d / "plays.tsv").write_text("\n".join(_plays_table()) + "\n")
    (d / "terms.csv").write_text("item,term,weight\n" + "\n".join(f"t{i:02d},g{i % 3},1" for i in range(40)) + "\n")
    model = d / "model"
    assert _cli("import-plays", d / "plays.tsv", "--model", model).returncode == 0
    assert _cli("import-terms", d / "terms.csv", "--model", model).returncode == 0
    r = _cli("fit", "--model", model, "--no-tune")
    assert r.returncode == 0, r.stderr
    return model


# --- item 13: tables --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["import-plays", "import-terms"])
def test_binary_files_are_refused_in_one_line(fitted, tmp_path, command):
    """A gzipped table, the catalog itself, audio: each used to end in a _csv.Error traceback."""
    plays = "\n".join(_plays_table()) + "\n"
    gz = tmp_path / "plays.tsv.gz"
    gz.write_bytes(gzip.compress(plays.encode(), mtime=0))
    wav = tmp_path / "song.tsv"
    rng = np.random.default_rng(0)
    # a WAV header and noise: what `import-plays songs/x.wav` would read
    wav.write_bytes(b"RIFF\x24\x10\x00\x00WAVEfmt " + (rng.standard_normal(4000) * 3000).astype("<i2").tobytes())
    for path, expect in ((gz, "gzip-compressed"), (fitted / "catalog.db", "SQLite database"), (wav, "binary data")):
        line = _one_line_error(_cli(command, path, "--model", tmp_path / "m"))
        assert str(path) in line and expect in line, line
    assert not (tmp_path / "m").exists()  # refused before a model folder was made


def test_cr_only_line_ends_are_read_as_lines(tmp_path):
    """Old Macintosh line ends (CR only): the whole file used to be one line and a _csv.Error."""
    plays = tmp_path / "cr.tsv"
    plays.write_bytes(b"user\titem\tplays\ru1\ti1\t3\ru1\ti2\tlots\ru2\ti2\t4\r")
    r = _cli("import-plays", plays, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    # the bad row is named by the line an editor shows it on
    assert b"2 plays imported" in r.stderr and b"cr.tsv:3: plays 'lots'" in r.stderr
    terms = tmp_path / "cr.csv"
    terms.write_bytes(b"item,term\r\ni1,jazz\ri2,metal\r")  # mixed CRLF and CR
    r = _cli("import-terms", terms, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "m" / "catalog.db") as db:
        assert sorted(t for (t,) in db.execute("SELECT term FROM terms")) == ["jazz", "metal"]


def test_a_line_past_the_length_limit_is_skipped_as_a_malformed_row(tmp_path):
    """A line longer than MAX_LINE_CHARS is reported as FILE:LINE and skipped (--strict refuses the
    file); it used to be read whole (1.2 GB for 200 MB) and end in a field-limit traceback."""
    from recommender.data import MAX_LINE_CHARS

    rows = _plays_table(n_users=3)
    rows.insert(3, "u99\t" + "x" * (MAX_LINE_CHARS + 10) + "\t5")
    table = tmp_path / "long.tsv"
    table.write_text("\n".join(rows) + "\n")
    r = _cli("import-plays", table, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert f"long.tsv:4: line longer than {MAX_LINE_CHARS:,} characters" in err, err
    assert f"{len(rows) - 2} plays imported" in err
    _one_line_error(_cli("import-plays", table, "--model", tmp_path / "m2", "--strict"))
    # a header past the limit is no table at all
    head = tmp_path / "head.tsv"
    head.write_text("user\titem\t" + "p" * (MAX_LINE_CHARS + 10) + "\nu1\ti1\t3\n")
    assert "longer than" in _one_line_error(_cli("import-plays", head, "--model", tmp_path / "m3"))
    # a field past the csv module's own limit (on a line under ours) is a malformed row as well
    field = tmp_path / "field.tsv"
    field.write_text("user\titem\tplays\nu1\ti1\t3\nu2\t" + "y" * 200_000 + "\t4\nu3\ti3\t2\n")
    r = _cli("import-plays", field, "--model", tmp_path / "m4")
    assert r.returncode == 0 and b"field.tsv:3: field larger than field limit" in r.stderr, r.stderr


def test_counts_past_float32_are_malformed_rows_and_fit_still_works(tmp_path):
    """1e39 is finite in Python and inf in float32; 1e37 fits float32 but gave NaN factors at fit."""
    rows = _plays_table()
    rows += ["u00\tt01\t1e39", "u01\tt02\t1e37", "u02\tt03\t1e400"]
    table = tmp_path / "big.tsv"
    table.write_text("\n".join(rows) + "\n")
    model = tmp_path / "m"
    r = _cli("import-plays", table, "--model", model)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    n = len(rows)
    assert f"big.tsv:{n - 2}: plays '1e39' is out of range" in err and f"big.tsv:{n - 1}: plays '1e37'" in err, err
    assert f"big.tsv:{n}: plays '1e400' must be a positive number" in err, err
    _one_line_error(_cli("import-plays", table, "--model", tmp_path / "m2", "--strict"))
    terms = tmp_path / "terms.csv"
    terms.write_text("item,term,weight\nt01,jazz,2\nt02,metal,1e39\n")
    r = _cli("import-terms", terms, "--model", model)
    assert r.returncode == 0 and b"terms.csv:3: weight '1e39' is out of range" in r.stderr, r.stderr
    fit = _cli("fit", "--model", model)
    assert fit.returncode == 0, fit.stderr


def test_a_catalog_written_before_the_range_check_is_refused_at_fit(fitted, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    with sqlite3.connect(model / "catalog.db") as db:
        db.execute("UPDATE plays SET plays = 1e39 WHERE (user, item) = (SELECT user, item FROM plays LIMIT 1)")
    line = _one_line_error(_cli("fit", "--model", model))
    assert "catalog.db" in line and "play count(s) out of range" in line, line
