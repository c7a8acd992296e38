"""Reading plays and terms: delimited tables, free text, the HetRec Last.fm layout.

Every reader returns the rows it could use and a list of problems, each with its line
number; the caller decides whether problems are skipped (reported) or refuse the file.
"""

from __future__ import annotations

import csv
import io
import re
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


def _open_text(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a table")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # HetRec's and many old dumps' encoding


def _dialect(text: str, path: Path) -> str:
    first = text.split("\n", 1)[0]
    if "\t" in first:
        return "\t"
    if "," in first:
        return ","
    if ";" in first:
        return ";"
    raise InputError(f"{path}: cannot tell the column separator (tab, comma or semicolon) from its first line")


def read_table(path: Path, columns: list[str], *, optional: tuple[str, ...] = ()) -> tuple[list[tuple[int, dict]], Problems]:
    """Rows as {column: text} with their line numbers; columns are found by header name."""
    text = _open_text(path)
    if not text.strip():
        raise InputError(f"{path}: empty table")
    sep = _dialect(text, path)
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            f"{path}: no column(s) {', '.join(missing)} in the header ({', '.join(header)}); name them with the --*-col options"
        )
    idx = {c: header.index(c) for c in columns + [c for c in optional if c in header]}
    problems = Problems(str(path))
    rows = []
    for line_no, rec in enumerate(reader, start=2):
        if not rec or all(not f.strip() for f in rec):
            continue
        if len(rec) < len(header):
            problems.add(line_no, f"{len(rec)} field(s), the header has {len(header)}")
            continue
        rows.append((line_no, {c: rec[i].strip() for c, i in idx.items()}))
    return rows, problems


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
        try:
            plays = float(p)
        except ValueError:
            problems.add(line_no, f"plays {p!r} is not a number")
            continue
        if not plays > 0 or plays != plays or plays == float("inf"):
            problems.add(line_no, f"plays {p!r} must be a positive number")
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
    text = _open_text(Path(path))
    first = text.split("\n", 1)[0]
    sep = _dialect(text, Path(path))
    header = [h.strip() for h in first.split(sep)]
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
        try:
            weight = float(w)
        except ValueError:
            problems.add(line_no, f"weight {w!r} is not a number")
            continue
        if not weight > 0:
            problems.add(line_no, f"weight {w!r} must be positive")
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
    problems = Problems(str(folder / "artists.dat"))
    for line_no, line in enumerate(_open_text(folder / "artists.dat").splitlines(), start=1):
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
