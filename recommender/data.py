"""Reading plays and terms: delimited tables, free text, the HetRec Last.fm layout.

Every reader returns the rows it could use and a list of problems, each with its line
number; the caller decides whether problems are skipped (reported) or refuse the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.errors import InputError

MAX_PROBLEMS_SHOWN = 5


@dataclass
class Problems:
    path: str
    lines: list[str] = field(default_factory=list)

    def add(self, line_no: int, why: str) -> None:
        self.lines.append(f"{self.path}:{line_no}: {why}")

    def summary(self) -> str:
        shown = "; ".join(self.lines[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(self.lines) - MAX_PROBLEMS_SHOWN} more)" if len(self.lines) > MAX_PROBLEMS_SHOWN else ""
        return f"{len(self.lines)} malformed row(s): {shown}{more}"


# Longest line read, in characters.  A row of plays is a few dozen characters and a row of free
# text a few thousand; a line past this is not a row (a binary file, a dump without line ends) and
# is skipped (FILE:LINE) without ever being held whole: a 200 MB line used to take 1.2 GB.  Fields
# are capped further by the csv module's own limit (131,072 characters), reported the same way.
MAX_LINE_CHARS = 1 << 20

# Largest play count or term weight accepted.  float32 (how the matrices hold them) ends at 3.4e38,
# but fitting multiplies and squares them (BM25 by K1 + 1 = 101, norms square them): 1e37 plays
# already gave NaN factors.  1e15 is far above any real count (a play a second for 30 million years)
# and leaves those products finite.
MAX_VALUE = 1e15

# Bytes looked at to tell a text table from a binary file
_SNIFF_BYTES = 8192
# C0 control characters other than tab, line feed, form feed and carriage return, and DEL: text
# tables hold none of them; binary files (audio, archives, databases) are full of them
_CONTROL = bytes([*range(0, 9), 11, *range(14, 32), 127])
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed: decompress it first"),
    (b"PK\x03\x04", "a zip archive: extract the table first"),
    (b"BZh", "bzip2-compressed: decompress it first"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first"),
    (b"SQLite format 3\x00", "an SQLite database, not a table"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)


def _check_text(path: Path) -> None:
    """Refuse, in one line, what is not a readable text file: missing, a folder, binary data."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a table")
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise InputError(f"{path}: {what}")
    # one stray control byte in a hand-edited table is tolerated; binary data has one in every few
    controls = len(head) - len(head.translate(None, _CONTROL))
    if b"\x00" in head or controls > max(1, len(head) // 100):
        raise InputError(f"{path}: binary data, not a text table (control bytes in its first {len(head)} bytes)")


def _lines(path: Path, encoding: str, problems: Problems) -> Iterator[str]:
    """The file's lines, line ends normalized (LF, CRLF and old Macintosh CR-only all read as LF).
    A line longer than MAX_LINE_CHARS is read past in pieces, reported as FILE:LINE, and given as an
    empty line so that the line numbers of the rest stay right."""
    try:
        f = open(path, encoding=encoding, newline=None)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with f:
        line_no = 0
        while line := f.readline(MAX_LINE_CHARS):
            line_no += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                while (rest := f.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                    pass
                problems.add(line_no, f"line longer than {MAX_LINE_CHARS:,} characters")
                yield "\n"
                continue
            yield line


def _decoded(read):
    """Run `read(encoding)` as UTF-8 (a BOM allowed); if the file is not UTF-8, again as Latin-1
    (HetRec's and many old dumps' encoding).  The files are streamed, so the encoding is known only
    once a line fails to decode: the second pass starts over."""
    try:
        return read("utf-8-sig")
    except UnicodeDecodeError:
        return read("latin-1")


def _dialect(first: str, path: Path) -> str:
    if "\t" in first:
        return "\t"
    if "," in first:
        return ","
    if ";" in first:
        return ";"
    raise InputError(f"{path}: cannot tell the column separator (tab, comma or semicolon) from its first line")


def _shown(header: list[str], limit: int = 200) -> str:
    """A header for a message: a garbled one can be as long as a line."""
    text = ", ".join(header)
    return text if len(text) <= limit else text[:limit] + "..."


def _header(lines: Iterator[str], path: Path, problems: Problems) -> tuple[int, list[str], str]:
    """(its line number, the column names, the separator) of the first non-blank line."""
    line_no = 0
    for line in lines:
        line_no += 1
        if line.strip():
            break
    else:
        raise InputError(f"{path}: empty table")
    if problems.lines:  # the header itself was past the line-length limit
        raise InputError(f"{path}: its first line is longer than {MAX_LINE_CHARS:,} characters: not a table")
    sep = _dialect(line, path)
    try:
        header = next(csv.reader([line], delimiter=sep))
    except csv.Error as exc:
        raise InputError(f"{path}:{line_no}: cannot read the header ({exc})") from None
    return line_no, [h.strip() for h in header], sep


def read_header(path: Path) -> list[str]:
    """The column names of a delimited table (its first non-blank line).

    Parameters
    ----------
    path : Path
        The table.

    Returns
    -------
    list of str
        The names, stripped.

    Raises
    ------
    InputError
        Missing, binary, empty, or no separator to be told from the first line.
    """
    path = Path(path)
    _check_text(path)

    def read(encoding: str) -> list[str]:
        problems = Problems(str(path))
        return _header(_lines(path, encoding, problems), path, problems)[1]

    return _decoded(read)


def read_table(path: Path, columns: list[str], *, optional: tuple[str, ...] = ()) -> tuple[list[tuple[int, dict]], Problems]:
    """Rows as {column: text} with their line numbers; columns are found by header name.

    The file is streamed: no line longer than MAX_LINE_CHARS is ever held; such lines, and rows
    the csv module cannot parse, are problems (FILE:LINE) like rows with too few fields."""
    path = Path(path)
    _check_text(path)
    return _decoded(lambda encoding: _read_table(path, columns, optional, encoding))


def _read_table(path: Path, columns: list[str], optional: tuple[str, ...], encoding: str):
    problems = Problems(str(path))
    lines = _lines(path, encoding, problems)
    header_line, header, sep = _header(lines, path, problems)
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            f"{path}: no column(s) {', '.join(missing)} in the header ({_shown(header)}); name them with the --*-col options"
        )
    idx = {c: header.index(c) for c in columns + [c for c in optional if c in header]}
    rows = []
    reader = csv.reader(lines, delimiter=sep)
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a quoted field past the csv module's field-size limit
            problems.add(header_line + reader.line_num, str(exc))
            continue
        line_no = header_line + reader.line_num
        if not rec or all(not f.strip() for f in rec):
            continue
        if len(rec) < len(header):
            problems.add(line_no, f"{len(rec)} field(s), the header has {len(header)}")
            continue
        rows.append((line_no, {c: rec[i].strip() for c, i in idx.items()}))
    return rows, problems


def _number(text: str, what: str) -> tuple[float | None, str | None]:
    """(the value, None) for a positive number within MAX_VALUE, else (None, why)."""
    try:
        value = float(text)
    except ValueError:
        return None, f"{what} {text!r} is not a number"
    if not value > 0 or value != value or value == float("inf"):
        return None, f"{what} {text!r} must be a positive number"
    if value > MAX_VALUE:
        return None, f"{what} {text!r} is out of range (at most {MAX_VALUE:g})"
    return value, None


@dataclass(frozen=True)
class PlayRow:
    user: str
    item: str
    plays: float


def read_plays(path: Path, *, user_col: str = "user", item_col: str = "item", plays_col: str = "plays") -> tuple[list[PlayRow], Problems]:
    rows, problems = read_table(Path(path), [user_col, item_col, plays_col])
    out = []
    for line_no, r in rows:
        u, i, p = r[user_col], r[item_col], r[plays_col]
        if not u or not i:
            problems.add(line_no, "empty user or item")
            continue
        plays, why = _number(p, "plays")
        if why:
            problems.add(line_no, why)
            continue
        out.append(PlayRow(u, i, plays))
    return out, problems


@dataclass(frozen=True)
class TermRow:
    item: str
    term: str
    weight: float


_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or our she so than that the their "
    "them they this to was we were what when which who will with you your".split()
)


def normalize_term(term: str) -> str:
    return " ".join(term.lower().split())


def text_terms(text: str) -> list[str]:
    """Words of free text, lower-cased, without stop words; adjacent pairs too ("hip hop")."""
    words = [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS and len(w) > 1]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def read_terms(path: Path, *, item_col: str = "item", term_col: str = "term", weight_col: str = "weight",
               text_col: str = "text") -> tuple[list[TermRow], Problems]:
    """(item, term[, weight]) rows, or (item, text) rows whose text is split into terms."""
    header = read_header(Path(path))
    out: list[TermRow] = []
    if text_col in header and term_col not in header:
        rows, problems = read_table(Path(path), [item_col, text_col])
        for line_no, r in rows:
            if not r[item_col]:
                problems.add(line_no, "empty item")
                continue
            out += [TermRow(r[item_col], t, 1.0) for t in text_terms(r[text_col])]
        return out, problems
    rows, problems = read_table(Path(path), [item_col, term_col], optional=(weight_col,))
    for line_no, r in rows:
        if not r[item_col] or not r[term_col]:
            problems.add(line_no, "empty item or term")
            continue
        w = r.get(weight_col, "") or "1"
        weight, why = _number(w, "weight")
        if why:
            problems.add(line_no, why)
            continue
        out.append(TermRow(r[item_col], normalize_term(r[term_col]), weight))
    return out, problems


@dataclass(frozen=True)
class HetRec:
    plays: list[PlayRow]
    item_names: dict[str, str]  # artist id -> name
    terms: list[TermRow]  # artist, tag, number of users who applied it
    user_tags: list[tuple[str, str, float]]  # user, artist, number of tags the user gave the artist
    problems: list[str]


def read_hetrec(folder: Path) -> HetRec:
    """The HetRec 2011 Last.fm 2k files: user_artists, artists, tags, user_taggedartists."""
    folder = Path(folder)
    need = ["user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat"]
    missing = [n for n in need if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder}: not a HetRec Last.fm folder (missing {', '.join(missing)})")
    plays, p1 = read_plays(folder / "user_artists.dat", user_col="userID", item_col="artistID", plays_col="weight")
    names: dict[str, str] = {}
    artists = folder / "artists.dat"
    _check_text(artists)
    problems = Problems(str(artists))

    def read_names(encoding: str) -> list[tuple[int, str]]:
        problems.lines.clear()  # a second pass (as Latin-1) starts over
        return [(n, line.rstrip("\n")) for n, line in enumerate(_lines(artists, encoding, problems), start=1)]

    for line_no, line in _decoded(read_names):
        if not line.strip():
            continue  # a blank line, or one past the length limit (reported as such)
        parts = line.split("\t")
        if len(parts) < 2:
            problems.add(line_no, "fewer than 2 fields")
            continue
        if line_no == 1 and parts[0] == "id":
            continue  # a header
        names[parts[0].strip()] = parts[1].strip()
    tag_names: dict[str, str] = {}
    rows, p3 = read_table(folder / "tags.dat", ["tagID", "tagValue"])
    for _, r in rows:
        tag_names[r["tagID"]] = normalize_term(r["tagValue"])
    rows, p4 = read_table(folder / "user_taggedartists.dat", ["userID", "artistID", "tagID"])
    per_tag: dict[tuple[str, str], set] = {}
    per_user: dict[tuple[str, str], int] = {}
    for line_no, r in rows:
        tag = tag_names.get(r["tagID"])
        if tag is None:
            p4.add(line_no, f"unknown tagID {r['tagID']}")
            continue
        per_tag.setdefault((r["artistID"], tag), set()).add(r["userID"])
        per_user[(r["userID"], r["artistID"])] = per_user.get((r["userID"], r["artistID"]), 0) + 1
    terms = [TermRow(a, t, float(len(us))) for (a, t), us in per_tag.items()]
    user_tags = [(u, a, float(n)) for (u, a), n in per_user.items()]
    return HetRec(plays, names, terms, user_tags, p1.lines + problems.lines + p3.lines + p4.lines)
