"""Fault injection for the library (issue 28): the folder vanishes and returns, folders become
unreadable, files are replaced or truncated while they are analysed, the database is locked,
names are not UTF-8 or hold newlines, and the server is killed at random points.  After every
step the invariant is checked against what the test knows is on disk:

- no stored analysis is lost: a file that is still there, or cannot be seen (its folder gone
  from view), keeps its document; only a file positively gone from a readable folder is forgotten;
- none is duplicated: one track per distinct audio, every track held by a file, no file pointing
  at a missing track;
- status tells the truth: analysed, failed, unavailable and the error match the database and
  what was done to the folder.

Analyses use `_library_fakes` (real decoding; one real document as the template), so the whole
module runs in well under a minute.  Runs are seeded (random.Random(28)): a failure replays.
As root (the usual CI container), mode 000 does not stop us, so an unreadable folder is the
PermissionError os.scandir gives another user, raised at that call; as another user, chmod is used.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer.stages.audio import decode
from analyzer.document import track_id
from analyzer.errors import AnalyzerError
from analyzer.library.store import Indexer, LibraryStore
from fixtures import synth

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _library_fakes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
SEED = int(os.environ.get("ANALYZE_FAULT_SEED", "28"))  # another seed: another sequence of faults
NAMES = ["a.wav", "b c.wav", os.fsdecode(b"bad\xff\xfe name.wav"), "two\nlines.wav", "back\\slash.wav",
         "sub/d.wav", "sub/e.wav", "sub/deeper/f.wav", "other/g.wav", "other/" + os.fsdecode(b"\xe9t\xe9.wav")]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Six short WAVs (bytes) and their track ids, and a truncated copy of the first."""
    folder = tmp_path_factory.mktemp("variants")
    out = []
    for bpm in (90, 110, 130, 150, 170, 190):
        x, sr, _ = synth.click_track(bpm=bpm, beats_per_bar=4, seconds=2)
        p = folder / f"v{bpm}.wav"
        synth.encode(p, x, sr)
        out.append((p.read_bytes(), track_id(decode(p).md5)))
    whole = out[0][0]
    return out, whole[: len(whole) * 45 // 100]


@pytest.fixture(autouse=True)
def quick(monkeypatch, library_template):
    import analyzer.run.batch as batch

    monkeypatch.setattr(batch, "analyze_path", _library_fakes.decoded_document)


def put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / ".put.part"
    tmp.write_bytes(data)
    old = time.time() - 60
    os.utime(tmp, (old - random.random(), old))
    os.replace(tmp, path)


class Denied:
    """Folders that cannot be read: os.scandir raises EACCES for them (see the module's note)."""

    def __init__(self, monkeypatch) -> None:
        self.folders: set[str] = set()
        real = os.scandir

        def scandir(path="."):
            if not isinstance(path, int) and os.path.abspath(os.fspath(path)) in self.folders:
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)


def in_emptied_folder(root: Path, rel: str) -> bool:
    """Whether the nearest folder of `rel` that exists holds nothing visible (an unmounted disk's
    mount point looks like this: what it held is kept, not forgotten)."""
    folder = root / rel
    while True:
        folder = folder.parent
        if folder.is_dir():
            return not [n for n in os.listdir(folder) if not n.startswith(".")]
        if folder == root:
            return True


def check(store: LibraryStore, status: dict, *, on_disk: dict[str, str | None], hidden: set[str],
          kept_before: dict[str, str], raised: str | None = None) -> None:
    """The invariant after a pass (`raised`: the error the pass ended with, a locked database's).

    on_disk : visible path -> the track id of its audio (None: a damaged file)
    hidden : paths on disk the scan cannot see (their folder unreadable, or the library moved away)
    kept_before : path -> track id stored before the step
    """
    files = store.files()
    con_tracks = {t.id for t in store.all_tracks()}
    referenced = {f.track_id for f in files.values() if f.track_id}
    # none duplicated, none dangling
    assert referenced == con_tracks, (referenced ^ con_tracks)
    for p, tid in on_disk.items():
        if p in hidden:
            continue
        assert p in files, p
        if tid is None:  # damaged now: failed, keeps what it had
            assert files[p].error and files[p].track_id == kept_before.get(p), (p, files[p])
        elif raised is None:
            assert files[p].track_id == tid and files[p].error is None, (p, files[p], tid)
    # nothing lost: what was stored stays unless its file is positively gone
    for p, tid in kept_before.items():
        if p in on_disk or p in hidden:
            assert p in files and (files[p].track_id == tid or on_disk.get(p) not in (None, tid)), p
        else:
            assert p not in files, (p, files.get(p))
    # status tells the truth
    counts = store.counts()
    assert status["analysed"] == counts["analysed"] and status["failed"] == counts["failed"]
    assert status["unavailable"] == sum(1 for f in files.values() if f.unavailable)
    if raised is not None:
        assert status["error"] == raised, status
        return
    assert {os.fsdecode(p) for p in hidden if p in kept_before} <= {p for p, f in files.items() if f.unavailable}
    if hidden & set(kept_before):
        assert status["error"], status
    else:
        assert status["error"] is None, status
        assert status["files"] == len(set(on_disk) - hidden) and status["pending"] == 0


def test_random_faults_against_the_indexer_keep_the_invariant(tmp_path, variants, monkeypatch):
    (audio, truncated) = variants
    rng = random.Random(SEED)
    lib, away = tmp_path / "lib", tmp_path / "away"
    lib.mkdir()
    store = LibraryStore(tmp_path / "x.db", lib, busy_timeout_s=0.2)
    ix = Indexer(store, settle_s=0)
    denied = Denied(monkeypatch)
    on_disk: dict[str, str | None] = {}
    moved_away = False
    log = []
    for step in range(STEPS):
        kept_before = {p: f.track_id for p, f in store.files().items() if f.track_id}
        op = rng.choice(["add"] * 5 + ["replace", "truncate", "restore", "delete"] * 2
                        + ["deny", "allow", "allow", "away", "back", "back", "back", "lock", "rmdir"])
        root = away if moved_away else lib
        locked = False
        if op == "add":
            name = rng.choice(NAMES)
            k = rng.randrange(len(audio))
            put(root / name, audio[k][0])
            on_disk[name] = audio[k][1]
        elif op == "delete" and on_disk:
            name = rng.choice(sorted(on_disk))
            (root / name).unlink()
            del on_disk[name]
        elif op == "replace" and on_disk:
            name = rng.choice(sorted(on_disk))
            k = rng.randrange(len(audio))
            put(root / name, audio[k][0])
            on_disk[name] = audio[k][1]
        elif op == "truncate" and on_disk:
            name = rng.choice(sorted(on_disk))
            put(root / name, truncated)
            on_disk[name] = None
        elif op == "restore":  # a damaged file copied again from the backup
            for name in [n for n, t in on_disk.items() if t is None][:1]:
                put(root / name, audio[0][0])
                on_disk[name] = audio[0][1]
        elif op == "deny":
            folder = rng.choice(["sub", "other", ""])
            denied.folders.add(os.path.abspath(lib / folder) if folder else os.path.abspath(lib))
        elif op == "allow":
            denied.folders.clear()
        elif op == "away" and not moved_away:
            lib.rename(away)
            lib.mkdir()  # an unmounted disk's mount point
            moved_away = True
        elif op == "back" and moved_away:
            lib.rmdir()
            away.rename(lib)
            moved_away = False
        elif op == "lock":
            locked = True
        elif op == "rmdir" and not moved_away:  # a whole folder deleted from a readable library
            import shutil

            folder = rng.choice(["sub", "other"])
            shutil.rmtree(lib / folder, ignore_errors=True)
            on_disk = {p: t for p, t in on_disk.items() if not p.startswith(folder + "/")}
        # what the scan cannot see: files under an unreadable folder, all when the library is away, and
        # files gone from a folder now empty
        hidden: set[str] = {p for p in kept_before if p not in on_disk and in_emptied_folder(lib, p)}
        for p in set(on_disk) | set(kept_before):
            if moved_away:
                hidden.add(p)
            for d in denied.folders:
                rel = os.path.relpath(d, lib)
                if os.path.isdir(d) and (rel == "." or p.startswith(rel + "/")):
                    hidden.add(p)
        if locked:
            blocker = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
        try:
            raised = None
            try:
                ix.run_pass()
            except AnalyzerError as exc:  # as the indexer's loop does: the pass ends, status says why
                raised = str(exc)
                ix._failed(raised)
            assert raised is None or locked, raised
            status = ix.status()
            log.append((step, op, status["analysed"], status["failed"], status["unavailable"], status["error"]))
            check(store, status, on_disk=on_disk, hidden=hidden, kept_before=kept_before, raised=raised)
        finally:
            if locked:
                blocker.execute("ROLLBACK")
                blocker.close()
    # all faults cleared: everything visible, analysed, nothing unavailable, no error
    denied.folders.clear()
    if moved_away:
        lib.rmdir()
        away.rename(lib)
    ix.run_pass()
    status = ix.status()
    kept = {p: f.track_id for p, f in store.files().items() if f.track_id}
    check(store, status, on_disk=on_disk, kept_before=kept,
          hidden={p for p in kept if p not in on_disk and in_emptied_folder(lib, p)})
    seen = {op: sum(1 for r in log if r[1] == op) for op in sorted({r[1] for r in log})}
    print(f"\n{STEPS} steps, seed {SEED}: {seen}; most analysed {max(r[2] for r in log)}, most failed "
          f"{max(r[3] for r in log)}, most unavailable {max(r[4] for r in log)}, "
          f"steps with an error in status {sum(1 for r in log if r[5])}")
    store.close()


def test_a_file_replaced_or_truncated_while_it_is_analysed(tmp_path, variants, monkeypatch):
    import analyzer.run.batch as batch

    (audio, truncated) = variants
    lib = tmp_path / "lib"
    put(lib / "x.wav", audio[0][0])
    put(lib / "y.wav", audio[1][0])
    ix = Indexer(LibraryStore(tmp_path / "x.db", lib), settle_s=0)
    real = batch.analyze_path
    swap = {"x.wav": audio[2][0], "y.wav": truncated}

    def meddling(path, options, resources, data=None):
        out = real(path, options, resources, data)
        name = Path(path).name
        if name in swap:  # the file changes after it was read, before its document is stored
            put(Path(path), swap.pop(name))
        return out

    monkeypatch.setattr(batch, "analyze_path", meddling)
    ix.run_pass()  # stores the documents of what was read, under the stamps seen before reading
    files = ix.store.files()
    assert files["x.wav"].track_id == audio[0][1] and files["y.wav"].track_id == audio[1][1]
    ix.run_pass()  # the changed stamps: x analysed again, y fails and keeps its document
    files = ix.store.files()
    assert files["x.wav"].track_id == audio[2][1] and files["x.wav"].error is None
    assert files["y.wav"].track_id == audio[1][1] and "truncated" in files["y.wav"].error
    assert {t.id for t in ix.store.all_tracks()} == {audio[2][1], audio[1][1]}
    status = ix.status()
    assert status["analysed"] == 1 and status["failed"] == 1 and status["failures"][0]["id"] == audio[1][1]
    put(lib / "y.wav", audio[1][0])  # restored: linked to its kept document, not analysed again
    ix.run_pass()
    assert ix.store.files()["y.wav"].error is None and ix.status()["failed"] == 0
    ix.store.close()


def test_a_locked_database_is_reported_and_the_next_pass_stores_everything(tmp_path, variants):
    (audio, _) = variants
    lib = tmp_path / "lib"
    put(lib / "x.wav", audio[0][0])
    db = tmp_path / "x.db"
    ix = Indexer(LibraryStore(db, lib, busy_timeout_s=0.2), settle_s=0, poll_s=0.05)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    ix.start()
    try:
        deadline = time.monotonic() + 30
        while not (ix.status()["error"] or "").count("in use by another program"):
            assert time.monotonic() < deadline, ix.status()
            time.sleep(0.02)
        assert ix.status()["analysed"] == 0
        blocker.execute("ROLLBACK")
        while ix.status()["analysed"] != 1 or ix.status()["error"] is not None:
            assert time.monotonic() < deadline, ix.status()
            time.sleep(0.02)
    finally:
        ix.stop()
        blocker.close()
    assert len(ix.store.all_tracks()) == 1
    ix.store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder of mode 000 (the scandir case covers this)")
def test_a_folder_made_unreadable_with_chmod_keeps_its_rows(tmp_path, variants):
    (audio, _) = variants
    lib = tmp_path / "lib"
    put(lib / "sub" / "x.wav", audio[0][0])
    put(lib / "y.wav", audio[1][0])
    ix = Indexer(LibraryStore(tmp_path / "x.db", lib), settle_s=0)
    ix.run_pass()
    os.chmod(lib / "sub", 0)
    try:
        ix.run_pass()
        assert set(ix.store.files()) == {"sub/x.wav", "y.wav"} and ix.status()["unavailable"] == 1
    finally:
        os.chmod(lib / "sub", 0o755)
    ix.run_pass()
    assert ix.status()["unavailable"] == 0 and ix.status()["error"] is None
    ix.store.close()


# --- the server killed at random points ------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int) -> dict | None:
    import httpx

    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/library/status", timeout=2)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _db_state(db: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        files = dict(con.execute("SELECT path, track_id FROM files"))
        tracks = dict(con.execute("SELECT id, etag FROM tracks"))
    finally:
        con.close()
    return files, tracks


def test_the_server_killed_at_random_points_loses_and_duplicates_nothing(tmp_path, variants):
    (audio, _) = variants
    rng = random.Random(28)
    lib, db = tmp_path / "lib", tmp_path / "x.db"
    names = ["a.wav", "b.wav", "sub/c.wav", "sub/d.wav", "e f.wav", "g.wav"]
    expected: dict[str, str] = {}
    for i, name in enumerate(names[:4]):  # each its own audio: a copy would be analysed again (see README)
        put(lib / name, audio[i][0])
        expected[name] = audio[i][1]
    env = {**os.environ, "ANALYZE_FAKE_DELAY_S": "0.3"}
    stored_etags: dict[str, str] = {}
    kills = 0
    stored_at_kill = []
    for step in range(6):
        if step in (2, 4):  # the folder changes between runs
            k = 3 + step // 2
            put(lib / names[k], audio[k][0])
            expected[names[k]] = audio[k][1]
        port = _free_port()
        proc = subprocess.Popen([*_library_fakes.FAKE_SERVE, str(lib), "--db", str(db), "--port", str(port),
                                 "--poll", "0.2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            t0 = time.monotonic()
            while _status(port) is None:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() - t0 < 60
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.2))  # a random point: mid-analysis, mid-store, or idle
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        kills += 1
        files, tracks = _db_state(db)
        # none duplicated or dangling; nothing stored before is lost or made again
        assert {t for t in files.values() if t} == set(tracks)
        for p, t in files.items():
            assert t is None or t == expected[p]
        for tid, etag in stored_etags.items():
            assert tracks.get(tid) == etag, tid
        stored_etags = dict(tracks)
        stored_at_kill.append(f"{len(tracks)}/{len(expected)}")
    # a last run to the end: everything analysed once, status true
    port = _free_port()
    proc = subprocess.Popen([*_library_fakes.FAKE_SERVE, str(lib), "--db", str(db), "--port", str(port),
                             "--poll", "0.2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not ((st := _status(port)) and st["analysed"] == len(expected) and st["pending"] == 0):
            assert proc.poll() is None and time.monotonic() - t0 < 60, st
            time.sleep(0.1)
        assert st["error"] is None and st["failed"] == 0 and st["unavailable"] == 0 and st["files"] == len(expected)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    files, tracks = _db_state(db)
    assert files == expected and set(tracks) == set(expected.values())
    for tid, etag in stored_etags.items():
        assert tracks[tid] == etag
    assert kills == 6
    print(f"\nSIGKILLs at random points (seed 28), documents stored / files at each: {stored_at_kill}")
