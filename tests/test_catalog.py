"""The identification catalog's file (issue 15): opened read-only to identify, never turned into
a catalog when it is something else, damage reported in one line."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _cli_fakes import ANALYZE, FAKE_ANALYZE, ROOT
from analyzer.library.catalog import SCHEMA_VERSION, Catalog
from analyzer.errors import InputError

SR = 22050


def _cli(cmd, *args):
    return subprocess.run([*cmd, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _one_error_line(proc, words: str):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 s of gated tone and noise: onsets enough for a few hundred codes."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(6 * SR) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.05 * rng.standard_normal(len(t))
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, x.astype(np.float32), SR)
    return path


def _add_track(cat: Catalog, path: str, n_codes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cat.add(path=path, times=rng.integers(0, 10_000, n_codes), codes=rng.integers(0, 2**20, n_codes),
            chroma=rng.integers(0, 2**32, 20, dtype=np.uint64).astype(np.uint32), duration_s=60.0,
            sample_md5="0" * 32, mtime_ns=1)


# --- the helper ---------------------------------------------------------------------------------------


def test_a_new_catalog_is_made_and_reopened(tmp_path):
    db = tmp_path / "c.db"
    with Catalog(db, create=True) as cat:
        _add_track(cat, "/music/a.mp3", 100)
    with Catalog(db) as cat:
        assert cat.count() == (1, 100)


def test_identify_opens_read_only(tmp_path):
    db = tmp_path / "c.db"
    Catalog(db, create=True).close()
    with Catalog(db) as cat:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            cat.db.execute("INSERT INTO meta VALUES ('x', 'y')")


def test_a_missing_catalog_is_not_created_for_reading(tmp_path):
    with pytest.raises(InputError, match="no such identification catalog"):
        Catalog(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("create", [False, True])
def test_other_databases_are_refused_untouched(tmp_path, create):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format_version', '1')")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = _digest(other)
    with pytest.raises(InputError, match="not an identification catalog"):
        Catalog(other, create=create)
    assert _digest(other) == before


def test_another_schema_version_is_refused(tmp_path):
    db = tmp_path / "c.db"
    Catalog(db, create=True).close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    for create in (False, True):
        with pytest.raises(InputError, match=f"schema version {SCHEMA_VERSION + 1}"):
            Catalog(db, create=create)


def test_an_empty_file_becomes_a_catalog_only_for_index(tmp_path):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    with pytest.raises(InputError, match="not an identification catalog"):
        Catalog(db)
    assert db.stat().st_size == 0
    with Catalog(db, create=True) as cat:
        assert cat.count() == (0, 0)


def test_sqlite_util_opens_versioned_files(tmp_path):
    from analyzer.library.sqlite_util import DatabaseKind, open_database

    kind = DatabaseKind(name="test store", version_key="format_version", version=3,
                        schema="CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                               "CREATE TABLE IF NOT EXISTS t (x);",
                        made_by="`make-test`")
    path = tmp_path / "s.db"
    con = open_database(path, kind, create=True)
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    con = open_database(path, kind, readonly=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == ("3",)
    con.close()
    with pytest.raises(InputError, match="no such test store.*make-test"):
        open_database(tmp_path / "none.db", kind, readonly=True)
    (tmp_path / "text.db").write_text("hello, not sqlite, " * 20)
    with pytest.raises(InputError, match="not a test store"):
        open_database(tmp_path / "text.db", kind, create=True)


# --- through the CLI --------------------------------------------------------------------------------


def test_identify_refuses_an_empty_file_instead_of_answering_null(tmp_path, clip):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    proc = _cli(ANALYZE, "identify", clip, "--db", db)
    assert proc.returncode == 1 and proc.stdout == ""
    _one_error_line(proc, "not an identification catalog")
    assert db.stat().st_size == 0


def test_the_recommenders_catalog_is_refused_and_left_alone(tmp_path, clip):
    from recommender.store import Store

    Store(tmp_path / "model", create=True).close()
    rec = tmp_path / "model" / "catalog.db"
    before = _digest(rec)
    proc = _cli(ANALYZE, "identify", clip, "--db", rec)
    assert proc.returncode == 1 and proc.stdout == ""
    _one_error_line(proc, "not an identification catalog")
    proc = _cli(ANALYZE, "index", clip.parent, "--db", rec)
    assert proc.returncode == 1
    _one_error_line(proc, "not an identification catalog")
    assert _digest(rec) == before


def _damaged_catalog(path: Path) -> Path:
    """A catalog whose code pages (everything after the tables' root pages) are overwritten."""
    with Catalog(path, create=True) as cat:
        _add_track(cat, "/music/a.mp3", 60_000)
    with sqlite3.connect(path) as con:
        page = con.execute("PRAGMA page_size").fetchone()[0]
        last_root = con.execute("SELECT MAX(rootpage) FROM sqlite_master").fetchone()[0]
        n_pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    assert n_pages > last_root + 10  # the codes outgrew their root page
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    garbage = np.random.default_rng(1).integers(0, 256, page, dtype=np.uint8).tobytes()
    with open(path, "r+b") as fh:
        for p in range(last_root + 1, n_pages + 1):  # pages count from 1
            fh.seek((p - 1) * page)
            fh.write(garbage)
    return path


def test_identify_reports_a_damaged_catalog_in_one_line(tmp_path, clip):
    from analyzer.stages import fingerprint as fpm

    if fpm.chromaprint_string(np.zeros(SR * 4, dtype=np.float32), SR)[0] is None:
        pytest.skip("libchromaprint is not installed")
    db = _damaged_catalog(tmp_path / "c.db")
    proc = _cli(ANALYZE, "identify", clip, "--db", db)
    assert proc.returncode == 1 and proc.stdout == ""
    _one_error_line(proc, "damaged")


def test_index_reports_a_damaged_catalog_in_one_line(tmp_path):
    db = _damaged_catalog(tmp_path / "c.db")
    src = tmp_path / "music"
    src.mkdir()
    (src / "a.wav").write_bytes(b"the fake fingerprinter never reads this")
    proc = _cli(FAKE_ANALYZE, "index", src, "--db", db, "--jobs", "1")
    assert proc.returncode == 1
    _one_error_line(proc, "damaged")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_identify_refuses_a_fifo_clip(tmp_path):
    db = tmp_path / "catalog.db"
    Catalog(db, create=True).close()
    os.mkfifo(tmp_path / "clip.mp3")
    proc = subprocess.run([*ANALYZE, "identify", str(tmp_path / "clip.mp3"), "--db", str(db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    _one_error_line(proc, "not a regular file")
