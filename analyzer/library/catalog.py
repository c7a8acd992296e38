"""Song identification: echoprint codes of a folder in SQLite, and look-ups of a clip against them.

One file, no server.  `codes` is a WITHOUT ROWID table keyed (code, track, time): the
rows of one code sit together on disk, so a look-up of a clip's ~260 distinct codes
is ~260 B-tree descents and a short scan each.  A match is the track whose codes line
up with the clip's at one time offset (a histogram of db time - clip time per track,
tolerant to one 23 ms unit): the count in that best bin is the score.

For millions of tracks the same schema moves to PostgreSQL as it stands (a btree on
code, or the table partitioned by code range, and `= ANY($1)` for the look-up); the
offset histogram stays in the client.  The Echo Nest's own server kept codes in an
inverted index (Solr) and re-scored the top tracks the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyzer.errors import quote_path
from analyzer.stages.fingerprint import FingerprintParams
from analyzer.library.sqlite_util import DatabaseKind, open_database, sqlite_errors, text_path

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    artist TEXT NOT NULL DEFAULT '',
    duration_s REAL NOT NULL,
    n_codes INTEGER NOT NULL,
    sample_md5 TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    added_at REAL NOT NULL,
    chromaprint BLOB NOT NULL  -- raw 32-bit sub-fingerprints, little-endian, one per 0.124 s
);
CREATE TABLE IF NOT EXISTS codes (
    code INTEGER NOT NULL,
    track INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    time INTEGER NOT NULL,
    PRIMARY KEY (code, track, time)
) WITHOUT ROWID;
"""

CATALOG = DatabaseKind(
    name="identification catalog", version_key="schema_version", version=SCHEMA_VERSION, schema=_SCHEMA,
    made_by="`analyze index DIR --db FILE`",
)


@dataclass(frozen=True)
class MatchParams:
    # codes of the clip and of a track agree in time to within this many units (23.2 ms)
    offset_tolerance_units: int = 1
    # a code that sits in more than this share of the tracks says little: skipped
    max_code_track_share: float = 0.5
    # tracks with the most aligned echoprint codes that go on to the chromaprint check
    candidates: int = 10
    # the check: chromaprint sub-fingerprints of clip and track compared at the echoprint offset
    # (+- this many 0.124 s items); bit error rate at or below max_ber is a match.  Right matches
    # of 10 s clips (64 kbps mp3, 10 dB SNR noise) measured 0.00-0.24 (drum loops highest: little
    # pitch content), unknown clips against their candidates >= 0.38, against any track at any
    # offset >= 0.31 (bench.identify)
    verify_reach_items: int = 4
    max_ber: float = 0.28
    min_overlap_items: int = 8  # 1 s
    top: int = 5


@dataclass(frozen=True)
class Match:
    track_id: int
    path: str
    title: str
    artist: str
    score: int  # distinct codes of the clip aligned with the track at one offset
    share: float  # score / the clip's distinct codes
    offset_s: float  # where the clip starts in the track
    ber: float  # chromaprint bit error rate at that offset (0 = identical, ~0.5 = unrelated)
    matched: bool


@dataclass(frozen=True)
class Lookup:
    matches: list[Match]
    n_query_codes: int  # distinct codes of the clip
    lookup_s: float


class Catalog:
    """The catalog file: `create=True` (index) makes or extends one; otherwise (identify) it is
    opened read-only.  Either way a file that is not a catalog of this schema version is
    refused untouched, and SQLite's errors (a damaged file) are one-line InputErrors."""

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        self.db = open_database(self.path, CATALOG, create=create, readonly=not create)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------

    def is_current(self, path: str, mtime_ns: int) -> bool:
        with sqlite_errors(self.path, CATALOG):
            for stored in _stored_forms(path):
                row = self.db.execute("SELECT mtime_ns FROM tracks WHERE path = ?", (stored,)).fetchone()
                if row is not None:
                    return int(row[0]) == mtime_ns
        return False

    def add(
        self, *, path: str, times: np.ndarray, codes: np.ndarray, chroma: np.ndarray, duration_s: float,
        sample_md5: str, mtime_ns: int, title: str = "", artist: str = "",
    ) -> int:
        """Insert or replace one track's codes in one transaction: a crash leaves the old rows or the new."""
        pairs = np.unique(np.stack([codes.astype(np.int64), times.astype(np.int64)], axis=1), axis=0)
        with sqlite_errors(self.path, CATALOG), self.db:
            for stored in _stored_forms(path):
                self.db.execute("DELETE FROM tracks WHERE path = ?", (stored,))
            cur = self.db.execute(
                "INSERT INTO tracks (path, title, artist, duration_s, n_codes, sample_md5, mtime_ns, added_at, chromaprint) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (text_path(path), title, artist, float(duration_s), int(len(pairs)), sample_md5, int(mtime_ns), time.time(),
                 np.ascontiguousarray(chroma, dtype="<u4").tobytes()),
            )
            tid = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO codes (code, track, time) VALUES (?, ?, ?)",
                ((int(c), tid, int(t)) for c, t in pairs),
            )
        return tid

    def count(self) -> tuple[int, int]:
        with sqlite_errors(self.path, CATALOG):
            n_tracks = self.db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
            n_codes = self.db.execute("SELECT COALESCE(SUM(n_codes), 0) FROM tracks").fetchone()[0]
        return int(n_tracks), int(n_codes)

    # --- reading ---------------------------------------------------------------------------

    def lookup(
        self, times: np.ndarray, codes: np.ndarray, chroma: np.ndarray, *, unit_s: float,
        params: MatchParams = MatchParams(),
    ) -> Lookup:
        """Echoprint codes find candidate tracks and the offset; chromaprint at that offset decides.

        InputError (one line) when the catalog cannot be read (damaged pages).
        """
        with sqlite_errors(self.path, CATALOG):
            return self._lookup(times, codes, chroma, unit_s=unit_s, params=params)

    def _lookup(self, times: np.ndarray, codes: np.ndarray, chroma: np.ndarray, *, unit_s: float,
                params: MatchParams) -> Lookup:
        t0 = time.perf_counter()
        n_tracks = int(self.db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
        uniq = np.unique(codes)
        rows: list[tuple[int, int, int]] = []
        # SQLite binds at most 32766 values per statement
        for i in range(0, len(uniq), 30_000):
            chunk = [int(c) for c in uniq[i : i + 30_000]]
            q = f"SELECT code, track, time FROM codes WHERE code IN ({','.join('?' * len(chunk))})"
            rows.extend(self.db.execute(q, chunk).fetchall())
        if not rows or n_tracks == 0:
            return Lookup([], int(len(uniq)), time.perf_counter() - t0)
        db = np.array(rows, dtype=np.int64)  # code, track, time
        # drop codes common to many tracks: they match everything at every offset
        pair_codes = np.unique(db[:, :2], axis=0)[:, 0]
        codes_u, tracks_per_code = np.unique(pair_codes, return_counts=True)
        common = codes_u[tracks_per_code > max(1, params.max_code_track_share * n_tracks)]
        if len(common):
            db = db[~np.isin(db[:, 0], common)]
        # every (clip occurrence, db occurrence) of a code: its offset db time - clip time
        order = np.argsort(codes, kind="stable")
        qc, qt = codes[order], times[order]
        lo = np.searchsorted(qc, db[:, 0], side="left")
        hi = np.searchsorted(qc, db[:, 0], side="right")
        reps = hi - lo
        keep = reps > 0
        db, lo, reps = db[keep], lo[keep], reps[keep]
        if len(db) == 0:
            return Lookup([], int(len(uniq)), time.perf_counter() - t0)
        idx = np.repeat(lo, reps) + (np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps))
        track = np.repeat(db[:, 1], reps)
        offset = np.repeat(db[:, 2], reps) - qt[idx]
        # histogram per (track, offset), each code counted once per bin: in a strictly periodic
        # track (a loop, a quantized MIDI render) one code repeats every bar and would otherwise
        # vote many times at every offset that is a multiple of the period
        tol = params.offset_tolerance_units
        off0 = int(offset.min()) - tol
        span = int(offset.max()) - off0 + 1 + tol
        code = np.repeat(db[:, 0], reps)
        # one int64 per (track, offset, code): 20 bits of code below the bin number
        packed = np.unique(((track * span + (offset - off0)) << 20) | code)
        # a bin also counts codes within the tolerance of its offset: spread each distinct vote to
        # its neighbours, then count distinct codes per bin (padding keeps tracks apart)
        spread = np.unique((packed[:, None] + (np.arange(-tol, tol + 1) << 20)[None, :]).ravel())
        keys, total = np.unique(spread >> 20, return_counts=True)
        best_track = keys // span
        # best offset per track
        order = np.lexsort((-total, best_track))
        first = np.ones(len(order), dtype=bool)
        first[1:] = best_track[order][1:] != best_track[order][:-1]
        winners = order[first]
        winners = winners[np.argsort(-total[winners], kind="stable")][: params.candidates]
        n_q = int(len(uniq))
        out = []
        for w in winners:
            tid = int(best_track[w])
            score = int(total[w])
            offset_s = float(keys[w] % span + off0) * unit_s
            p, title, artist, blob = self.db.execute(
                "SELECT path, title, artist, chromaprint FROM tracks WHERE id = ?", (tid,)
            ).fetchone()
            ber, overlap = verify(chroma, np.frombuffer(blob, dtype="<u4"), offset_s=offset_s, params=params)
            out.append(
                Match(
                    track_id=tid, path=p, title=title, artist=artist, score=score, share=round(score / max(1, n_q), 4),
                    offset_s=round(offset_s, 3), ber=round(ber, 4),
                    matched=ber <= params.max_ber and overlap >= params.min_overlap_items,
                )
            )
        out.sort(key=lambda m: (not m.matched, m.ber, -m.score))
        out = out[: params.top]
        return Lookup(out, n_q, time.perf_counter() - t0)


def _stored_forms(path: str) -> list[str]:
    """How a catalog may hold `path`: its `text_path` (a name that is not UTF-8 escaped, backslashes
    doubled), and as it is where a catalog made before that holds a name with a backslash."""
    text = text_path(path)
    legacy = path if text != path and not any("\udc80" <= ch <= "\udcff" for ch in path) else None
    return [text] if legacy is None else [text, legacy]


def verify(q: np.ndarray, t: np.ndarray, *, offset_s: float, params: MatchParams) -> tuple[float, int]:
    """Lowest bit error rate of clip sub-fingerprints q against track t near the offset, and its overlap."""
    from analyzer.stages.fingerprint import CHROMAPRINT_ITEM_S

    centre = int(round(offset_s / CHROMAPRINT_ITEM_S))
    best, best_n = 1.0, 0
    for off in range(centre - params.verify_reach_items, centre + params.verify_reach_items + 1):
        lo, hi = max(0, -off), min(len(q), len(t) - off)
        if hi - lo < params.min_overlap_items:
            continue
        ber = float(np.bitwise_count(q[lo:hi] ^ t[lo + off : hi + off]).mean()) / 32.0
        if ber < best:
            best, best_n = ber, hi - lo
    return best, best_n


# --- files in, codes out ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileCodes:
    path: str
    mtime_ns: int
    duration_s: float
    sample_md5: str
    title: str
    artist: str
    times: np.ndarray
    codes: np.ndarray
    chroma: np.ndarray  # raw chromaprint sub-fingerprints, uint32


# Echoprint as the documents carry it aims at one onset per second per band (~26 codes/s): on a
# 10 s clip only ~17% of the codes then match the track's, because the adaptive threshold's
# state differs at the clip's start.  Aiming at ~3 per second (120 frames) doubles that share
# (0.41 on GTZAN clips) at ~3x the codes; the catalog uses this denser setting.
IDENTIFY_PARAMS = FingerprintParams(onset_target_frames=120)
# a query's interval within this many frames (2.9 ms) of a quantization step also looks up the
# neighbouring step's code
QUERY_MARGIN_FRAMES = 2


def file_codes(path: Path, decode_params=None, *, query: bool = False) -> FileCodes:
    """Decode straight to 11025 Hz (no analysis) and compute the catalog's echoprint codes."""
    from analyzer.stages.audio import DecodeParams, decode
    from analyzer.stages.fingerprint import ECHOPRINT_SR, chromaprint_raw, echoprint_from_samples

    from analyzer.run.batch import check_regular_file

    check_regular_file(Path(path))  # a FIFO would block the decoder's open() forever
    audio = decode(path, sr=ECHOPRINT_SR, params=decode_params or DecodeParams())
    _, times, codes = echoprint_from_samples(
        audio.samples, IDENTIFY_PARAMS, margin_frames=QUERY_MARGIN_FRAMES if query else 0
    )
    return FileCodes(
        path=str(Path(path).resolve()),
        mtime_ns=Path(path).stat().st_mtime_ns,
        duration_s=audio.duration_s,
        sample_md5=audio.md5,
        title=audio.source.tags.get("title", ""),
        artist=audio.source.tags.get("artist", ""),
        times=times,
        codes=codes,
        chroma=chromaprint_raw(audio.samples, audio.sr),
    )


def file_codes_or_error(path: Path, decode_params=None) -> FileCodes | str:
    """For worker processes: the codes, or a one-line reason."""
    from analyzer.errors import AnalyzerError

    try:
        return file_codes(path, decode_params)
    except AnalyzerError as exc:
        return str(exc)
    except MemoryError:
        return f"{quote_path(path)}: out of memory"
    except Exception as exc:  # a bug: report it, keep the batch going
        return f"{quote_path(path)}: internal error: {type(exc).__name__}: {exc}"


def match_to_dict(m: Match) -> dict:
    return {
        "path": m.path, "title": m.title, "artist": m.artist, "score": m.score, "share": m.share,
        "offset_s": m.offset_s, "ber": m.ber, "matched": m.matched,
    }
