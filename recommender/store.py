"""The model folder: an SQLite catalog (users, items, plays, terms, analyses, model versions) and
fitted models as safetensors, each version written beside the last and switched to atomically.

    M/catalog.db           the data, re-importable at any time
    M/models/v0007/        one fitted model: arrays.safetensors + manifest.json
    M/CURRENT              the active version's folder name (replaced by rename)
    M/models/.fit.lock     held (flock) by the fit writing a version: one at a time per folder
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; fits then trust that no other fit runs on the folder
    fcntl = None

import numpy as np
import scipy.sparse as sp

from analyzer.errors import InputError
from analyzer.library.sqlite_util import DatabaseKind, open_database

from .data import MAX_VALUE

FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                                  title TEXT NOT NULL DEFAULT '', artist TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS plays (user INTEGER NOT NULL REFERENCES users(id), item INTEGER NOT NULL REFERENCES items(id),
                                  plays REAL NOT NULL, PRIMARY KEY (user, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_tags (user INTEGER NOT NULL REFERENCES users(id), item INTEGER NOT NULL REFERENCES items(id),
                                      n REAL NOT NULL, PRIMARY KEY (user, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS terms (item INTEGER NOT NULL REFERENCES items(id), term TEXT NOT NULL,
                                  weight REAL NOT NULL, PRIMARY KEY (item, term)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analyses (item INTEGER PRIMARY KEY REFERENCES items(id), features TEXT NOT NULL,
                                     source TEXT NOT NULL DEFAULT '', added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS models (version TEXT PRIMARY KEY, created REAL NOT NULL, summary TEXT NOT NULL);
"""

# terms the analyzer's taggers heard in an item's audio (`recommend ingest`), apart from the terms
# people wrote: added after format 1 was released, so an older catalog gains the table when opened
# (older programs ignore it)
_AUDIO_TERMS = """
CREATE TABLE IF NOT EXISTS audio_terms (item INTEGER NOT NULL REFERENCES items(id), term TEXT NOT NULL,
                                        probability REAL NOT NULL, PRIMARY KEY (item, term)) WITHOUT ROWID;
"""


STORE_KIND = DatabaseKind(
    name="recommender catalog",
    version_key="format_version",
    version=FORMAT_VERSION,
    schema=_SCHEMA + _AUDIO_TERMS,
    made_by="`recommend import-plays` (or import-hetrec)",
)


class Store:
    def __init__(self, folder: str | os.PathLike, *, create: bool = False):
        self.folder = Path(folder)
        db = self.folder / "catalog.db"
        if not db.is_file():
            if not create:
                raise InputError(f"{self.folder}: not a model folder (no catalog.db); import data first")
            if self.folder.exists() and not self.folder.is_dir():
                raise InputError(f"{self.folder}: exists and is not a folder")
            self.folder.mkdir(parents=True, exist_ok=True)
        # one opener for every versioned SQLite file of the project: another program's database
        # (an identification catalog, say) is refused untouched, SQLite's errors are one line
        self.db = open_database(db, STORE_KIND, create=create)
        with self.db:
            self.db.executescript(_AUDIO_TERMS)

    def close(self) -> None:
        self.db.close()

    # --- ids --------------------------------------------------------------------------------

    def _ids(self, table: str, names: list[str]) -> dict[str, int]:
        uniq = sorted(set(names))
        self.db.executemany(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", ((n,) for n in uniq))
        out = {}
        for i in range(0, len(uniq), 900):
            chunk = uniq[i : i + 900]
            q = f"SELECT name, id FROM {table} WHERE name IN ({','.join('?' * len(chunk))})"
            out.update(dict(self.db.execute(q, chunk).fetchall()))
        return out

    # --- writing (each call one transaction: a crash leaves the old rows or all the new) ------

    def add_plays(self, rows, *, replace: bool = True) -> int:
        with self.db:
            users = self._ids("users", [r.user for r in rows])
            items = self._ids("items", [r.item for r in rows])
            verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
            self.db.executemany(f"{verb} INTO plays VALUES (?, ?, ?)",
                                ((users[r.user], items[r.item], float(r.plays)) for r in rows))
        return len(rows)

    def add_terms(self, rows) -> int:
        with self.db:
            items = self._ids("items", [r.item for r in rows])
            agg: dict[tuple[int, str], float] = {}
            for r in rows:
                k = (items[r.item], r.term)
                agg[k] = agg.get(k, 0.0) + r.weight
            self.db.executemany("INSERT OR REPLACE INTO terms VALUES (?, ?, ?)", ((i, t, w) for (i, t), w in agg.items()))
        return len(agg)

    def add_user_tags(self, rows) -> int:
        with self.db:
            users = self._ids("users", [u for u, _, _ in rows])
            items = self._ids("items", [a for _, a, _ in rows])
            self.db.executemany("INSERT OR REPLACE INTO user_tags VALUES (?, ?, ?)",
                                ((users[u], items[a], float(n)) for u, a, n in rows))
        return len(rows)

    def set_item_info(self, info: dict[str, tuple[str, str]]) -> None:
        with self.db:
            ids = self._ids("items", list(info))
            self.db.executemany("UPDATE items SET title = ?, artist = ? WHERE id = ?",
                                ((t, a, ids[n]) for n, (t, a) in info.items()))

    def add_analysis(self, item: str, features: list[float], *, title: str, artist: str, source: str,
                     audio_terms: dict[str, float] | None = None) -> None:
        """Store an item's audio vector and, where given, the terms heard in its audio.

        Parameters
        ----------
        item : str
            The item's id (created if new).
        features : list of float
            Its audio vector.
        title, artist : str
            Set where the item has no title yet.
        source : str
            Where the analysis came from (the audio file's name).
        audio_terms : dict, optional
            Term -> probability (0..1]; replaces the item's earlier audio terms.  None leaves
            them as they are (an analysis without terms says nothing about them).
        """
        with self.db:
            iid = self._ids("items", [item])[item]
            self.db.execute("UPDATE items SET title = ?, artist = ? WHERE id = ? AND title = ''", (title, artist, iid))
            self.db.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?)",
                            (iid, json.dumps(features), source, time.time()))
            if audio_terms is not None:
                self.db.execute("DELETE FROM audio_terms WHERE item = ?", (iid,))
                self.db.executemany("INSERT INTO audio_terms VALUES (?, ?, ?)",
                                    ((iid, t, float(p)) for t, p in audio_terms.items()))

    # --- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {t: int(self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("users", "items", "plays", "terms", "user_tags", "analyses", "audio_terms")}

    def dataset(self):
        """Everything as a Dataset (ids dense, in database order)."""
        from .dataset import Dataset

        users = [r[0] for r in self.db.execute("SELECT name FROM users ORDER BY id")]
        uid = {r[0]: i for i, r in enumerate(self.db.execute("SELECT id FROM users ORDER BY id"))}
        items, titles, artists, iid = [], [], [], {}
        for i, (k, name, title, artist) in enumerate(self.db.execute("SELECT id, name, title, artist FROM items ORDER BY id")):
            items.append(name)
            titles.append(title or name)
            artists.append(artist or title or name)
            iid[k] = i
        if not users or not items:
            raise InputError(f"{self.folder}: no plays imported yet (recommend import-plays / import-hetrec)")
        p = np.array(self.db.execute("SELECT user, item, plays FROM plays").fetchall(), dtype=np.float64).reshape(-1, 3)
        if len(p) == 0:
            raise InputError(f"{self.folder}: the plays table is empty")
        self._check_values("play count", p[:, 2])
        plays = sp.csr_matrix((p[:, 2], ([uid[int(u)] for u in p[:, 0]], [iid[int(i)] for i in p[:, 1]])),
                              shape=(len(users), len(items)), dtype=np.float32)
        t = self.db.execute("SELECT item, term, weight FROM terms").fetchall()
        self._check_values("term weight", np.array([x[2] for x in t], dtype=np.float64))
        h = self.db.execute("SELECT item, term, probability FROM audio_terms").fetchall()
        self._check_values("audio term probability", np.array([x[2] for x in h], dtype=np.float64), top=1.0)
        # one vocabulary for what people wrote and what the taggers heard, so a listener's "rock"
        # from tags reaches a song whose audio says "rock"
        terms = sorted({x[1] for x in t} | {x[1] for x in h})
        ti = {x: i for i, x in enumerate(terms)}
        term_counts = sp.csr_matrix(([x[2] for x in t], ([iid[x[0]] for x in t], [ti[x[1]] for x in t])),
                                    shape=(len(items), len(terms)), dtype=np.float32)
        audio_term_counts = None
        if h:
            audio_term_counts = sp.csr_matrix(([x[2] for x in h], ([iid[x[0]] for x in h], [ti[x[1]] for x in h])),
                                              shape=(len(items), len(terms)), dtype=np.float32)
        g = self.db.execute("SELECT user, item, n FROM user_tags").fetchall()
        self._check_values("tag count", np.array([x[2] for x in g], dtype=np.float64))
        user_tags = sp.csr_matrix(([x[2] for x in g], ([uid[x[0]] for x in g], [iid[x[1]] for x in g])),
                                  shape=(len(users), len(items)), dtype=np.float32)
        a = self.db.execute("SELECT item, features FROM analyses").fetchall()
        audio = present = None
        if a:
            d = len(json.loads(a[0][1]))
            audio = np.zeros((len(items), d), dtype=np.float32)
            present = np.zeros(len(items), dtype=bool)
            for k, f in a:
                v = json.loads(f)
                if len(v) == d:
                    audio[iid[k]] = v
                    present[iid[k]] = True
        return Dataset(users, items, titles, artists, plays, terms, term_counts, user_tags, audio, present,
                       audio_term_counts)

    def _check_values(self, what: str, values: np.ndarray, *, top: float = MAX_VALUE) -> None:
        """Refuse counts the importers would not take (catalogs written before they checked): one
        of 1e39 is inf as float32, and fit then failed with NaN factors."""
        bad = ~((values > 0) & (values <= top))
        if bad.any():
            raise InputError(f"{self.folder / 'catalog.db'}: {int(bad.sum())} {what}(s) out of range (e.g. "
                             f"{values[bad][0]:g}; 0 < value <= {top:g}); import the data into a new model folder")

    # --- model versions ---------------------------------------------------------------------

    @contextlib.contextmanager
    def fitting(self) -> Iterator[list[str]]:
        """Hold the folder's fit lock while a version is fitted, written and published.

        One fit per folder at a time, so whatever temporaries are found on entry were left by a fit
        that died (a crash, Ctrl-C, a kill) and are cleared.  The lock is the kernel's (flock): it
        goes with the process however that ends, so a dead fit never leaves the folder locked.

        Yields
        ------
        list of str
            The leftovers cleared (names relative to the model folder).

        Raises
        ------
        InputError
            Another fit holds the lock.
        """
        models = self.folder / "models"
        try:
            models.mkdir(exist_ok=True)
            lock = open(models / ".fit.lock", "a")
        except OSError as exc:
            raise InputError(f"{models}: cannot write a model version here ({exc.strerror or exc})") from None
        with lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise InputError(f"{self.folder}: another fit is writing to this model folder; "
                                     "run this one when it has finished") from None
            yield self._clear_leftovers()
        # closing the file released the lock

    def _clear_leftovers(self) -> list[str]:
        """An unfinished version (.vNNNN.tmp), an old one whose removal was cut short (.vNNNN.del),
        CURRENT's temporary: call only with the fit lock held."""
        models = self.folder / "models"
        found = [*models.glob(".v*.tmp"), *models.glob(".v*.del"), self.folder / ".CURRENT.tmp"]
        cleared = []
        for path in sorted(p for p in found if p.exists() or p.is_symlink()):
            _remove(path)
            cleared.append(str(path.relative_to(self.folder)))
        return cleared

    def prune(self, *, keep: int) -> list[str]:
        """Remove all but the newest `keep` model versions; never the one CURRENT names.

        Parameters
        ----------
        keep : int
            How many of the newest versions stay (>= 1).  With 2, the version a reader loaded just
            before the switch is still there while it reads.

        Returns
        -------
        list of str
            The versions removed, oldest first.
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, not {keep}")
        models = self.folder / "models"
        cur = self.folder / "CURRENT"
        current = cur.read_text().strip() if cur.is_file() else None
        versions = sorted((p for p in models.glob("v[0-9]*") if p.is_dir() and p.name[1:].isdigit()),
                          key=lambda p: int(p.name[1:]))
        old = [p for p in versions[:-keep] if p.name != current]
        for path in old:
            # out of sight first (one rename), then removed: an interrupted removal leaves a .del
            # folder that the next fit clears, never a half version that looks whole
            gone = path.with_name(f".{path.name}.del")
            path.rename(gone)
            _remove(gone)
        return [p.name for p in old]

    def new_version_dir(self) -> tuple[str, Path]:
        models = self.folder / "models"
        models.mkdir(exist_ok=True)
        taken = [int(p.name[1:]) for p in models.glob("v[0-9]*") if p.name[1:].isdigit()]
        name = f"v{(max(taken) + 1 if taken else 1):04d}"
        tmp = models / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        return name, tmp

    def publish(self, name: str, tmp: Path, summary: dict) -> Path:
        """Move the finished version into place, then point CURRENT at it (both renames)."""
        final = self.folder / "models" / name
        tmp.rename(final)
        cur_tmp = self.folder / ".CURRENT.tmp"
        cur_tmp.write_text(name + "\n")
        cur_tmp.replace(self.folder / "CURRENT")
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (name, time.time(), json.dumps(summary)))
        return final

    def current(self) -> Path:
        cur = self.folder / "CURRENT"
        if not cur.is_file():
            raise InputError(f"{self.folder}: no fitted model yet (run `recommend fit --model {self.folder}`)")
        path = self.folder / "models" / cur.read_text().strip()
        if not (path / "manifest.json").is_file():
            raise InputError(f"{path}: model version is incomplete (no manifest.json); refit")
        return path


def _remove(path: Path) -> None:
    """A folder with its contents; a file or a symbolic link itself (never what a link points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
