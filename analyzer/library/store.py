"""A music library: the audio files under one folder and their analysis documents in a database.

    LIBRARY/.analyze/library.db   SQLite by default (a hidden folder: the scan never reads it)
    postgresql://...              or PostgreSQL (psycopg 3, the `postgres` extra)

One schema for both, versioned: `schema_version` holds the number of `MIGRATIONS` steps applied,
and opening a database applies the missing steps in order, each in its own transaction.  A
database of another program, or one a newer version made, is refused untouched.

A track's id is its decoded samples' md5 (``track.sample_md5``) as 22 base62 characters, the
shape of a Spotify id: the same audio keeps its id across renames, copies and re-tagging, and a
re-encoded copy keeps it only if its decoded samples do not change.

`Indexer` keeps the database in step with the folder: it polls the folder, analyses new and
changed files with the batch machinery (`batch.run_jobs`, models loaded once) and stores each
document as soon as it is made, so a run that is stopped loses only the files in progress.

Library code: raises AnalyzerError, never prints or exits.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.run.batch import AUDIO_EXTENSIONS, Job, Resources, RunOptions, not_regular_reason, run_jobs
from analyzer.document import TRACK_ID_LENGTH as ID_LENGTH  # noqa: F401  (the served ids; serve reads it here)
from analyzer.document import track_id
from analyzer.errors import AnalyzerError, InputError, ParameterError, one_line, quote_path
from analyzer.library.sqlite_util import describe_sqlite_error, os_path, text_path


DEFAULT_DB = Path(".analyze") / "library.db"
# a search holds at most this many words (SQLite's expression depth grows with them: 1000 fails)
MAX_SEARCH_WORDS = 32
KIND = "music library database"
MADE_BY = "`analyze serve LIBRARY_DIR`"

# Each step is the statements that take the schema from version i to i + 1 ({blob}: the binary
# column type of the database).  Append steps; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE tracks (
            id TEXT PRIMARY KEY,
            sample_md5 TEXT NOT NULL,
            document {blob} NOT NULL,
            etag TEXT NOT NULL,
            name TEXT NOT NULL,
            artist TEXT NOT NULL,
            album TEXT NOT NULL,
            duration_ms BIGINT NOT NULL,
            search TEXT NOT NULL,
            analyzed_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE files (
            path TEXT PRIMARY KEY,
            mtime_ns BIGINT NOT NULL,
            size BIGINT NOT NULL,
            track_id TEXT REFERENCES tracks(id),
            error TEXT,
            checked_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX files_track ON files (track_id)",
    ),
    (
        # why a stored file cannot be seen now (its folder missing, empty or unreadable); NULL when it can
        "ALTER TABLE files ADD COLUMN unavailable TEXT",
        # paths are stored by `sqlite_util.text_path` from now on: a backslash is doubled
        "UPDATE files SET path = REPLACE(path, '\\', '\\\\')",
    ),
)


@dataclass(frozen=True)
class FileState:
    mtime_ns: int
    size: int
    track_id: str | None
    error: str | None
    unavailable: str | None = None  # why the file cannot be seen now (kept, not forgotten)


@dataclass(frozen=True)
class TrackInfo:
    id: str
    name: str
    artist: str
    album: str
    duration_ms: int
    path: str  # relative to the library folder, as `text_path` stores it ("" when no file holds it any more)


class _Backend:
    """The few things that differ between SQLite and PostgreSQL."""

    blob = "BLOB"
    name = "sqlite"

    def __init__(self, conn, shown: str) -> None:
        self.conn = conn
        self.shown = shown

    def sql(self, text: str) -> str:
        return text

    def tables(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def ours(self) -> None:
        """The file is (or will now be) this program's database: readers never block the writer."""
        self.conn.execute("PRAGMA journal_mode = WAL")

    def error(self, exc: Exception) -> InputError:
        return InputError(f"{self.shown}: {KIND} {describe_sqlite_error(exc)}")

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)


class _Postgres(_Backend):
    blob = "BYTEA"
    name = "postgresql"

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def tables(self) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}

    def ours(self) -> None:
        pass

    def error(self, exc: Exception) -> InputError:
        first = (str(exc).strip().splitlines() or [""])[0]
        return InputError(f"{self.shown}: {KIND}: {type(exc).__name__}: {first}")


_SECRET_KEYS = ("password", "sslpassword", "passfile")


def shown_url(url: str) -> str:
    """A ``postgresql://`` URL as messages show it: no user or password, no secret query parameter."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = [(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{urlencode(query, safe='/*')}" if query else "")


def _hide_secrets(url: str, text: str) -> str:
    """`text` with every password the URL holds replaced by ***."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    secrets = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_KEYS]
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _connect(db: str, root: Path, busy_timeout_s: float = 5.0) -> _Backend:
    if db.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError:
            raise InputError("--db postgresql://...: psycopg is not installed "
                             "(pip install 'echonest-analyzer[postgres]')") from None
        shown = shown_url(db)
        try:
            conn = psycopg.connect(db, autocommit=True)
        except psycopg.Error as exc:
            reason = _hide_secrets(db, (str(exc).strip().splitlines() or [type(exc).__name__])[0])
            raise InputError(f"{shown}: cannot connect to PostgreSQL ({reason})") from None
        backend = _Postgres(conn, shown)
        backend.errors = (psycopg.Error,)
        return backend
    path = Path(db)
    try:
        if path.exists() and not path.is_file():
            raise InputError(f"{quote_path(path)}: not a regular file, so not a {KIND}")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, a folder that cannot be written
        raise InputError(f"{quote_path(path)}: cannot make the {KIND} there ({exc.strerror or exc})") from None
    try:
        # autocommit (isolation_level None): transactions are explicit, below.  Nothing is written
        # here: WAL is switched on once the file is known to be ours (`LibraryStore._migrate`)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise InputError(f"{quote_path(path)}: not a {KIND} (not an SQLite file)") from None
        raise InputError(f"{quote_path(path)}: {KIND} {describe_sqlite_error(exc)}") from None
    return _Backend(conn, quote_path(path))


class LibraryStore:
    """The library's database: documents by track id, and the state of every file.

    Thread-safe: one connection behind a lock (the server's request threads read while the
    indexer writes).

    Parameters
    ----------
    db : str
        A file name (SQLite, created if missing) or a ``postgresql://`` URL.
    root : Path
        The library folder (file paths are stored relative to it).
    busy_timeout_s : float
        SQLite: how long a write waits for another program's lock before it fails (one line,
        "in use by another program"; the indexer tries again at its next pass).

    Raises
    ------
    InputError
        The database cannot be opened, belongs to another program, or was made by a newer
        version of this program.
    """

    def __init__(self, db: str | os.PathLike, root: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.root = Path(root)
        self._b = _connect(os.fspath(db), self.root, busy_timeout_s)
        self._lock = threading.RLock()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @property
    def kind(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._b.name

    def close(self) -> None:
        with self._lock:
            self._b.conn.close()

    # --- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._errors():
            self._b.conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._b.conn.execute("ROLLBACK")
                raise
            self._b.conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._b.errors as exc:
            raise self._b.error(exc) from None

    def _x(self, sql: str, params: tuple = ()):
        return self._b.conn.execute(self._b.sql(sql), params)

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock, self._errors():
            return list(self._x(sql, params).fetchall())

    def _migrate(self) -> None:
        with self._lock, self._errors():
            tables = self._b.tables()
            if tables and "schema_version" not in tables:
                listed = ", ".join(sorted(tables)[:6])
                raise InputError(f"{self._b.shown}: not a {KIND}: another program's database (tables {listed})")
            if tables:
                # refused untouched where it is newer: checked before WAL rewrites the header
                version = self._version()
                if version > len(MIGRATIONS):
                    raise InputError(f"{self._b.shown}: {KIND} schema version {version}, made by a newer analyze "
                                     f"(this one reads up to {len(MIGRATIONS)})")
            self._b.ours()
            if not tables:
                with self._tx():
                    self._x("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    self._x("INSERT INTO schema_version (version) VALUES (0)")
            version = self._version()
            if version > len(MIGRATIONS):
                raise InputError(f"{self._b.shown}: {KIND} schema version {version}, made by a newer analyze "
                                 f"(this one reads up to {len(MIGRATIONS)})")
            for step in range(version, len(MIGRATIONS)):
                with self._tx():
                    for statement in MIGRATIONS[step]:
                        self._x(statement.format(blob=self._b.blob))
                    self._x("UPDATE schema_version SET version = ?", (step + 1,))

    def _version(self) -> int:
        rows = self._x("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1:
            raise InputError(f"{self._b.shown}: {KIND} damaged ({len(rows)} rows in schema_version, expected 1)")
        return int(rows[0][0])

    def schema_version(self) -> int:
        """The number of migration steps applied."""
        with self._lock, self._errors():
            return self._version()

    # --- writing ----------------------------------------------------------------------------

    # Paths: the methods take and give a file's path relative to the library as `os.fsdecode` gives
    # it (undecodable bytes as surrogates); the database holds its `text_path`, and what is shown
    # (TrackInfo.path, failures) is that text.

    def put_document(self, path: str, *, mtime_ns: int, size: int, document: bytes, doc: dict) -> str:
        """Store a file's document (its track made or replaced) and point the file at it; the track id."""
        meta, track = doc["meta"], doc["track"]
        tid = track_id(track["sample_md5"])
        shown = text_path(path)
        name = meta.get("title") or Path(shown).stem
        search = " ".join((name, meta.get("artist", ""), meta.get("album", ""), shown)).lower()
        row = (tid, track["sample_md5"], document, '"' + hashlib.md5(document).hexdigest() + '"', name,
               meta.get("artist", ""), meta.get("album", ""), int(round(track["duration"] * 1000)), search, time.time())
        with self._tx():
            exists = self._x("SELECT 1 FROM tracks WHERE id = ?", (tid,)).fetchone()
            if exists:
                self._x("UPDATE tracks SET sample_md5 = ?, document = ?, etag = ?, name = ?, artist = ?, album = ?, "
                        "duration_ms = ?, search = ?, analyzed_at = ? WHERE id = ?", row[1:] + (tid,))
            else:
                self._x("INSERT INTO tracks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._put_file(path, mtime_ns, size, tid, None)
            self._drop_orphans()  # the file's previous audio, if it changed
        return tid

    def link_file(self, path: str, *, mtime_ns: int, size: int, track: str) -> None:
        """Point a file at a track already stored (its audio did not change)."""
        with self._tx():
            self._put_file(path, mtime_ns, size, track, None)
            self._drop_orphans()

    def put_failure(self, path: str, *, mtime_ns: int, size: int, reason: str) -> None:
        """Record why a file could not be analysed (tried again when it changes).

        A file that had a document keeps it (a file cut short or damaged in place loses nothing
        stored: its id still answers, status lists the failure) until a new analysis replaces it.
        """
        with self._tx():
            row = self._x("SELECT track_id FROM files WHERE path = ?", (text_path(path),)).fetchone()
            self._put_file(path, mtime_ns, size, row[0] if row else None, reason)

    def remove_files(self, paths: list[str]) -> None:
        """Forget files that left the folder, and the tracks no file holds any more."""
        if not paths:
            return
        with self._tx():
            for p in paths:
                self._x("DELETE FROM files WHERE path = ?", (text_path(p),))
            self._drop_orphans()

    def reconcile(self, gone: list[str], unavailable: dict[str, str]) -> None:
        """After a scan, in one transaction: forget the files positively `gone` (and the tracks no
        file holds any more); mark the `unavailable` ones (path -> why) and every other file seen."""
        with self._tx():
            for p in gone:
                self._x("DELETE FROM files WHERE path = ?", (text_path(p),))
            if gone:
                self._drop_orphans()
            self._x("UPDATE files SET unavailable = NULL WHERE unavailable IS NOT NULL")
            for p, why in unavailable.items():
                self._x("UPDATE files SET unavailable = ? WHERE path = ?", (why, text_path(p)))

    def _put_file(self, path: str, mtime_ns: int, size: int, tid: str | None, error: str | None) -> None:
        path = text_path(path)
        self._x("DELETE FROM files WHERE path = ?", (path,))
        self._x("INSERT INTO files (path, mtime_ns, size, track_id, error, checked_at) VALUES (?, ?, ?, ?, ?, ?)",
                (path, mtime_ns, size, tid, error, time.time()))

    def _drop_orphans(self) -> None:
        self._x("DELETE FROM tracks WHERE id NOT IN (SELECT track_id FROM files WHERE track_id IS NOT NULL)")

    # --- reading ----------------------------------------------------------------------------

    def files(self) -> dict[str, FileState]:
        """Every file the database knows, by path relative to the library."""
        out = {}
        for r in self._rows("SELECT path, mtime_ns, size, track_id, error, unavailable FROM files"):
            name = os_path(r[0])
            out[r[0] if name is None else name] = FileState(int(r[1]), int(r[2]), r[3], r[4], r[5])
        return out

    def document(self, tid: str) -> tuple[bytes, str] | None:
        """(the stored document, its ETag) or None."""
        rows = self._rows("SELECT document, etag FROM tracks WHERE id = ?", (tid,))
        return (bytes(rows[0][0]), rows[0][1]) if rows else None

    def etag(self, tid: str) -> str | None:
        """The ETag of a stored document (cheap: the document is not read), or None."""
        rows = self._rows("SELECT etag FROM tracks WHERE id = ?", (tid,))
        return rows[0][0] if rows else None

    def etags(self) -> dict[str, str]:
        """Every stored document's ETag by track id, in one query (the page's list checks its cache with them)."""
        return {r[0]: r[1] for r in self._rows("SELECT id, etag FROM tracks")}

    def has_track(self, tid: str) -> bool:
        return bool(self._rows("SELECT 1 FROM tracks WHERE id = ?", (tid,)))

    _INFO = ("SELECT t.id, t.name, t.artist, t.album, t.duration_ms, "
             "COALESCE((SELECT MIN(f.path) FROM files f WHERE f.track_id = t.id), '') FROM tracks t")

    def tracks(self, ids: list[str]) -> dict[str, TrackInfo]:
        """Tags and duration of the tracks among `ids` that exist."""
        out: dict[str, TrackInfo] = {}
        for tid in dict.fromkeys(ids):
            for r in self._rows(self._INFO + " WHERE t.id = ?", (tid,)):
                out[r[0]] = TrackInfo(r[0], r[1], r[2], r[3], int(r[4]), r[5])
        return out

    def all_tracks(self) -> list[TrackInfo]:
        return [TrackInfo(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in self._rows(self._INFO + " ORDER BY t.id")]

    def search(self, query: str, *, limit: int, offset: int) -> tuple[list[TrackInfo], int]:
        """Tracks whose title, artist, album or path hold every word of `query` (any case).

        Returns
        -------
        (list of TrackInfo, int)
            One page (ordered by name, then id) and the number of matches in all.
        """
        words = list(dict.fromkeys(query.lower().split()))
        if len(words) > MAX_SEARCH_WORDS:
            raise InputError(f"a search of {len(words)} different words: at most {MAX_SEARCH_WORDS}")
        where = " AND ".join(["t.search LIKE ? ESCAPE '\\'"] * len(words)) or "1 = 1"
        params = tuple("%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words)
        total = int(self._rows(f"SELECT COUNT(*) FROM tracks t WHERE {where}", params)[0][0])
        rows = self._rows(f"{self._INFO} WHERE {where} ORDER BY t.name, t.id LIMIT ? OFFSET ?",
                          params + (int(limit), int(offset)))
        return [TrackInfo(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows], total

    def lookup(self, path: str) -> str | None:
        """The track id of a file (path relative to the library), or None."""
        rows = self._rows("SELECT track_id FROM files WHERE path = ?", (text_path(path),))
        return rows[0][0] if rows else None

    def counts(self) -> dict[str, int]:
        # analysed: files whose document is of their present content (a failed file may keep an older one)
        r = self._rows("SELECT COUNT(*), SUM(CASE WHEN track_id IS NOT NULL AND error IS NULL THEN 1 ELSE 0 END), "
                       "COUNT(error), COUNT(unavailable) FROM files")[0]
        return {"files": int(r[0]), "analysed": int(r[1] or 0), "failed": int(r[2]), "unavailable": int(r[3]),
                "tracks": int(self._rows("SELECT COUNT(*) FROM tracks")[0][0])}

    def failures(self, limit: int = 100) -> list[dict]:
        """Files that failed: path, reason, and the id of the older document each keeps (null if none)."""
        return [{"path": r[0], "reason": r[1], "id": r[2]} for r in self._rows(
            "SELECT path, error, track_id FROM files WHERE error IS NOT NULL ORDER BY path LIMIT ?", (limit,))]

    def unavailable(self, limit: int = 100) -> list[dict]:
        """Files kept although the last scan could not see them, and why."""
        return [{"path": r[0], "reason": r[1]} for r in self._rows(
            "SELECT path, unavailable FROM files WHERE unavailable IS NOT NULL ORDER BY path LIMIT ?", (limit,))]


def open_library(root: str | os.PathLike, db: str | None = None) -> LibraryStore:
    """The store of a library folder: `db` (a file or ``postgresql://`` URL), or LIBRARY/.analyze/library.db.

    Raises
    ------
    InputError
        `root` is not a folder, or the database cannot be used (see `LibraryStore`).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{quote_path(root)}: not a folder (give the folder that holds the music)")
    return LibraryStore(db if db is not None else root / DEFAULT_DB, root)


@dataclass
class Scan:
    """What one look at the library folder saw.

    Attributes
    ----------
    found : dict
        Audio files (relative path as `os.fsdecode` gives it) -> (mtime_ns, size).
    listed : dict
        Each folder read (relative POSIX path, "" for the root) -> whether it holds anything
        visible (an entry whose name does not start with ".").
    unreadable : dict
        Folders that could not be read (relative path -> why).
    missing : str or None
        Why the library folder itself could not be read, if it could not.
    """

    found: dict[str, tuple[int, int]] = field(default_factory=dict)
    listed: dict[str, bool] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    missing: str | None = None

    def why_unseen(self, rel: str) -> str | None:
        """None if the file `rel` (not found) is positively gone; otherwise why it could not be seen.

        A file is gone when the nearest of its folders that was read is readable and not empty
        (a folder deleted from a readable folder is gone with its files); a folder that was empty
        (an unmounted disk's mount point looks like this) or unreadable on the way hides it.
        """
        if self.missing is not None:
            return self.missing
        parts = rel.split("/")[:-1]
        for i in range(len(parts) + 1):  # from the root down: an unreadable folder hides all below it
            folder = "/".join(parts[:i])
            if folder in self.unreadable:
                return f"folder {text_path(folder) or '.'} cannot be read ({self.unreadable[folder]})"
        for i in range(len(parts), -1, -1):  # the nearest folder that was read
            folder = "/".join(parts[:i])
            if folder in self.listed:
                if self.listed[folder]:
                    return None
                return f"folder {text_path(folder) or '.'} is empty (an unmounted disk?)"
        return "not seen"


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def scan(root: Path) -> Scan:
    """Look at the audio files under `root` (hidden entries left out), and note what could not be read.

    Raises nothing: a folder that cannot be read is recorded in the result, so that what it
    holds is not taken as gone.
    """
    out = Scan()
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        out.missing = f"the library folder {quote_path(root)} cannot be seen ({_why(exc)})"
        return out
    if not stat.S_ISDIR(st.st_mode):
        out.missing = f"the library folder {quote_path(root)} is not a folder now"
        return out
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.unreadable[rel] = _why(exc)
            continue
        visible = [e for e in entries if not e.name.startswith(".")]
        out.listed[rel] = bool(visible)
        for e in visible:
            child = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(child)
                    continue
                if Path(e.name).suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                if not_regular_reason(Path(e.path)) is not None:
                    continue
                st = os.stat(e.path)
            except FileNotFoundError:
                continue  # a broken link, or gone since the listing
            except OSError as exc:  # a folder that lists but cannot be looked into (no x permission)
                out.unreadable.setdefault(rel, _why(exc))
                continue
            out.found[child] = (st.st_mtime_ns, st.st_size)
    return out


@dataclass
class IndexStatus:
    """What the indexer is doing (read by the status endpoint)."""

    scans: int = 0
    found: int = 0
    pending: list[str] = field(default_factory=list)
    current: str | None = None
    last_scan: float | None = None
    last_error: str | None = None
    missing: str | None = None  # why the library folder could not be read at the last pass


class Indexer:
    """Keeps a `LibraryStore` in step with its folder, in a background thread.

    Each pass lists the folder, forgets files that left it, and analyses the files that are new
    or whose mtime or size changed (a changed file whose decoded samples are those of a stored
    track is linked to it without a new analysis).  A file modified less than `settle_s` ago is
    left for a later pass (it may still be being copied).  Each document is stored as soon as it
    is made.

    Parameters
    ----------
    store : LibraryStore
        Where documents go; its `root` is the folder.
    options : RunOptions
        How each file is analysed.
    workers : int
        Worker processes (1: in this process's indexing thread, models loaded once for all passes).
    poll_s : float
        Seconds between passes.
    settle_s : float
        A file younger than this is not read yet.
    """

    def __init__(self, store: LibraryStore, options: RunOptions = RunOptions(), *, workers: int = 1,
                 poll_s: float = 5.0, settle_s: float = 2.0) -> None:
        if not (math.isfinite(poll_s) and poll_s > 0 and math.isfinite(settle_s) and settle_s >= 0):
            raise ParameterError(f"poll {poll_s} s must be a number > 0 and settle {settle_s} s one >= 0")
        self.store = store
        self.options = options
        self.workers = workers
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.resources = Resources(options.embedder, ensemble=options.ensemble)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = IndexStatus()
        self._status_lock = threading.Lock()

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run passes every `poll_s` seconds in a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._loop, name="library-indexer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop after the file in progress (waits up to `timeout_s`)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def rescan(self) -> None:
        """Start the next pass now."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except AnalyzerError as exc:  # the database went away or broke: say so, try again later
                self._failed(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not end indexing silently: shown in status
                self._failed(f"internal error: {type(exc).__name__}: {exc}")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _failed(self, message: str) -> None:
        with self._status_lock:
            self._status.last_error = one_line(message)[:500]
            self._status.current = None

    # --- one pass ---------------------------------------------------------------------------

    def run_pass(self) -> int:
        """List the folder and bring the database up to date; the number of files analysed or linked."""
        root = self.store.root
        seen = scan(root)
        found = seen.found
        known = self.store.files()
        gone, unavailable = [], {}
        for p in known:
            if p not in found:
                why = seen.why_unseen(p)
                if why is None:
                    gone.append(p)
                else:
                    unavailable[p] = why
        if gone or unavailable or any(k.unavailable for k in known.values()):
            self.store.reconcile(gone, unavailable)
        now_ns = time.time_ns()
        todo = [p for p, (mtime, size) in found.items()
                if (k := known.get(p)) is None or (k.mtime_ns, k.size) != (mtime, size)]
        settled = [p for p in todo if now_ns - found[p][0] >= self.settle_s * 1e9]
        with self._status_lock:
            self._status.scans += 1
            self._status.found = len(found)
            self._status.pending = list(todo)
            self._status.last_scan = time.time()
            self._status.missing = seen.missing or (
                f"{len(unavailable)} stored file(s) cannot be seen now and are kept, not forgotten "
                f"(see unavailable_files; e.g. {text_path(next(iter(unavailable)))}: {next(iter(unavailable.values()))})"
                if unavailable else None)
        done = 0
        analyse = []
        for p in settled:
            if known.get(p) is not None and known[p].track_id is not None and self._relink(p, found[p]):
                done += 1
            else:
                analyse.append(p)
        done += self._analyse(analyse, found)
        with self._status_lock:
            self._status.last_error = None  # this pass went through
        return done

    def _relink(self, rel: str, stat: tuple[int, int]) -> bool:
        """A changed file whose decoded samples are a stored track's: point it there (no analysis)."""
        from analyzer.stages.audio import decode

        try:
            audio = decode(self.store.root / rel, params=self.options.decode)
        except AnalyzerError:
            return False
        tid = track_id(audio.md5)
        if not self.store.has_track(tid):
            return False
        self.store.link_file(rel, mtime_ns=stat[0], size=stat[1], track=tid)
        self._done(rel)
        return True

    def _analyse(self, rels: list[str], found: dict[str, tuple[int, int]]) -> int:
        if not rels:
            return 0
        jobs = [Job(self.store.root / r, Path(r).with_suffix(".json")) for r in rels]
        rel_of = {j.source: r for j, r in zip(jobs, rels)}
        n = 0

        def on_start(job: Job) -> None:
            with self._status_lock:
                self._status.current = text_path(rel_of[job.source])

        if self.workers > 1:
            with self._status_lock:
                self._status.current = text_path(rels[0])
        with closing(run_jobs(jobs, self.options, workers=self.workers, resources=self.resources,
                              on_start=on_start)) as results:
            for res in results:
                rel = rel_of[res.job.source]
                mtime, size = found[rel]
                try:
                    self._store(rel, mtime, size, res)
                except AnalyzerError:
                    raise  # the database's: no file can be stored now; the pass ends, status says why
                except Exception as exc:  # noqa: BLE001 - a bug with this file: it fails (tried again when it
                    # changes), status lists it, and the files after it are still stored
                    self.store.put_failure(rel, mtime_ns=mtime, size=size,
                                           reason=one_line(f"internal error: {type(exc).__name__}: {exc}")[:500])
                n += 1
                self._done(rel)
                if self._stop.is_set():
                    break
        with self._status_lock:
            self._status.current = None
        return n

    def _store(self, rel: str, mtime: int, size: int, res) -> None:
        import orjson

        if res.error:
            self.store.put_failure(rel, mtime_ns=mtime, size=size, reason=res.error)
            return
        try:
            doc = orjson.loads(res.document)
            track_id(doc["track"]["sample_md5"])
        except (orjson.JSONDecodeError, KeyError, TypeError, InputError) as exc:
            raise RuntimeError(f"the analysis made an unreadable document ({exc})") from None
        self.store.put_document(rel, mtime_ns=mtime, size=size, document=res.document, doc=doc)

    def _done(self, rel: str) -> None:
        with self._status_lock:
            if rel in self._status.pending:
                self._status.pending.remove(rel)

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        """Files known, analysed, pending, failed and unavailable (with reasons), the file in progress,
        the last pass, and why the last pass or the folder failed (``error``; null when all is well)."""
        counts = self.store.counts()
        failures, unavailable = self.store.failures(), self.store.unavailable()
        with self._status_lock:
            s = self._status
            return {
                "root": text_path(os.fsdecode(self.store.root)), "database": self.store.kind, "files": s.found,
                "analysed": counts["analysed"], "tracks": counts["tracks"], "pending": len(s.pending),
                "failed": counts["failed"], "failures": failures, "unavailable": counts["unavailable"],
                "unavailable_files": unavailable, "current": s.current, "scans": s.scans, "last_scan": s.last_scan,
                "poll_seconds": self.poll_s, "error": s.last_error or s.missing,
            }
