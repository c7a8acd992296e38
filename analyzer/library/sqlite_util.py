"""SQLite files with a versioned `meta` table: opened, checked and refused in one place.

A file the program did not make (another program's database, the recommender's model
catalog, a text file, a 0-byte file handed to a reader) is refused before anything is
written to it; a reader opens read-only, so it can never change what it reads.  SQLite's
own errors ("database disk image is malformed", "database is locked") become one-line
`InputError`s that name the file.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from analyzer.errors import InputError, quote_path


@dataclass(frozen=True)
class DatabaseKind:
    """What a versioned SQLite file of one kind looks like.

    Attributes
    ----------
    name : str
        How messages call it ("identification catalog").
    version_key : str
        The key in `meta(key, value)` that holds the format's version.
    version : int
        The version this code reads and writes.
    schema : str
        CREATE TABLE statements (with `meta`), run once when a new file is made.
    made_by : str
        The command that makes one, for the hints in messages ("`analyze index DIR --db FILE`").
    """

    name: str
    version_key: str
    version: int
    schema: str
    made_by: str


def open_database(
    path: str | os.PathLike, kind: DatabaseKind, *, create: bool = False, readonly: bool = False
) -> sqlite3.Connection:
    """Open a versioned SQLite file, checking that it is of `kind` before anything writes to it.

    Parameters
    ----------
    path : path-like
        The database file.
    kind : DatabaseKind
        What it must hold.
    create : bool
        Make the file (or fill an empty one: 0 bytes, or a database without tables) with
        `kind.schema`.  Without it a missing or empty file is refused.
    readonly : bool
        Open with SQLite's `mode=ro`: no statement can change the file.

    Returns
    -------
    sqlite3.Connection
        With foreign keys on; in WAL mode when writable.

    Raises
    ------
    InputError
        Missing (and not `create`), not a database, a database of another kind, another
        version of this kind, or unreadable; one line naming the file and what to do.
    """
    if create and readonly:
        raise ValueError("create and readonly exclude each other")
    path = Path(path)
    shown = quote_path(path)
    if not path.exists():
        if not create:
            raise InputError(f"{shown}: no such {kind.name} (make one with {kind.made_by})")
    elif not path.is_file():
        raise InputError(f"{shown}: not a regular file, so not {_a(kind.name)}")
    try:
        if readonly:
            # a URI so that mode=ro applies; the path is percent-quoted (a '?' or '#' in a name)
            db = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)
        else:
            db = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise _mapped(exc, path, kind) from None
    try:
        _check_or_make(db, path, kind, create=create)
        db.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            db.execute("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as exc:
        db.close()
        if "not a database" in str(exc):
            raise InputError(f"{shown}: not {_a(kind.name)} (not an SQLite file)") from None
        raise _mapped(exc, path, kind) from None
    except BaseException:
        db.close()
        raise
    return db


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _check_or_make(db: sqlite3.Connection, path: Path, kind: DatabaseKind, *, create: bool) -> None:
    shown = quote_path(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        # 0 bytes or a database without tables: only a writer that was asked to create may fill it
        if not create:
            raise InputError(f"{shown}: not {_a(kind.name)}: an empty file (make one with {kind.made_by})")
        # one transaction: a crash leaves an empty file or a whole, versioned one (a file with
        # tables and no version would be refused as another program's from then on)
        key = kind.version_key.replace("'", "''")
        db.executescript(
            f"BEGIN; {kind.schema}; INSERT INTO meta (key, value) VALUES ('{key}', '{int(kind.version)}'); COMMIT;"
        )
        return
    row = None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (kind.version_key,)).fetchone()
    if row is None:
        listed = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
        raise InputError(f"{shown}: not {_a(kind.name)}: another program's database (tables {listed})")
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        version = None
    if version != kind.version:
        raise InputError(
            f"{shown}: {kind.name} {kind.version_key.replace('_', ' ')} {row[0]}, this program reads {kind.version}"
        )


def describe_sqlite_error(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the user, in a few words.

    Parameters
    ----------
    exc : sqlite3.Error
        The error SQLite raised.

    Returns
    -------
    str
        "damaged (...)", "in use by another program (...)", ... with SQLite's own words in
        brackets.
    """
    text = str(exc)
    low = text.lower()
    if "malformed" in low or "corrupt" in low:
        return f"damaged ({text})"
    if "not a database" in low:
        return f"not an SQLite database ({text})"
    if "locked" in low or "busy" in low:
        return f"in use by another program ({text}); try again when it is done"
    if "readonly" in low or "read-only" in low:
        return f"cannot be written ({text})"
    if "disk" in low and "full" in low:
        return f"the disk is full ({text})"
    return f"unreadable ({type(exc).__name__}: {text})"


def _mapped(exc: sqlite3.Error, path: str | os.PathLike, kind: DatabaseKind) -> InputError:
    what = describe_sqlite_error(exc)
    hint = f"; make a new one with {kind.made_by}" if what.startswith("damaged") else ""
    return InputError(f"{quote_path(path)}: {kind.name} {what}{hint}")


@contextmanager
def sqlite_errors(path: str | os.PathLike, kind: DatabaseKind) -> Iterator[None]:
    """Turn SQLite errors raised in the block into one-line `InputError`s naming the file.

    Parameters
    ----------
    path : path-like
        The database file, for the message.
    kind : DatabaseKind
        Its kind, for the message and the hint.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise _mapped(exc, path, kind) from None


def text_path(path: str) -> str:
    """A file name as a database stores it: valid UTF-8 text, losslessly.

    A name that is not UTF-8 reaches Python with its undecodable bytes as lone surrogates
    (surrogateescape), which no database driver accepts.  Each such byte is written ``\\xNN``
    and each backslash doubled, so every name has exactly one text form (`os_path` inverts it);
    a UTF-8 name without a backslash is stored as it is.

    Parameters
    ----------
    path : str
        A name as `os.fsdecode` gives it.

    Returns
    -------
    str
        Text any driver accepts and JSON can carry; also how messages may show the name.
    """
    if not any(ch == "\\" or "\udc80" <= ch <= "\udcff" for ch in path):
        return path
    out = []
    for ch in path:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def os_path(text: str) -> str | None:
    """The file name (as `os.fsdecode` gives it) whose `text_path` is `text`; None if no name has that form."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
        elif text[i + 1 : i + 2] == "\\":
            out.append("\\")
            i += 2
        elif text[i + 1 : i + 2] == "x" and re.fullmatch("[89a-f][0-9a-f]", text[i + 2 : i + 4]):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            return None
    return "".join(out)
