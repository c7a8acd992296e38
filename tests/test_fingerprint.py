"""The four strings (echoprint, chromaprint, synch, rhythm) and identification with `analyze index/identify`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from pathlib import Path

from analyzer.stages import fingerprint as fpm
from analyzer.errors import DecodeError

SR = 22050


def _load(path) -> np.ndarray:
    from analyzer.stages.audio import decode

    return decode(path, sr=SR).samples


def _murmur2_scalar(key: bytes, seed: int) -> int:
    """Appleby's MurmurHash2, written out byte by byte (the reference the vectorised one must match)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (seed ^ len(key)) & mask
    i = 0
    while len(key) - i >= 4:
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
        i += 4
    rest = key[i:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if len(rest) >= 1:
        h ^= rest[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


@pytest.mark.parametrize("key,seed,expected", [
    # Apache Commons Codec's MurmurHash2 known answers (hash32 of a string, its default seed 0x9747b28c):
    # the scalar reference is Appleby's algorithm, not our reading of it
    (b"Lorem ipsum dolor sit amet, consectetur adipisicing elit", 0x9747B28C, 0xB3BF597E),
    (b"", 0x9747B28C, 275646681),
    (b"c", 0x9747B28C, -1877468854 & 0xFFFFFFFF),  # one tail byte (hash32("9chG_Yo[`m", 1, 1))
])
def test_the_scalar_reference_gives_the_published_murmurhash2_values(key, seed, expected):
    assert _murmur2_scalar(key, seed) == expected


def test_murmur_hash_matches_the_scalar_reference():
    rng = np.random.default_rng(0)
    d0, d1 = rng.integers(0, 400, 50), rng.integers(0, 400, 50)
    band = rng.integers(0, 8, 50)
    got = fpm.murmur2_5(d0, d1, band)
    for a, b, c, h in zip(d0, d1, band, got):
        key = int(a).to_bytes(2, "little") + int(b).to_bytes(2, "little") + bytes([int(c)])
        assert int(h) == _murmur2_scalar(key, fpm.HASH_SEED)


@pytest.fixture(scope="module")
def song_x(fx):
    if "song" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed: no rendered song")
    return _load(fx["song"]["path"])


def test_echoprint_string_round_trips_and_has_the_published_layout(song_x):
    fp = fpm.fingerprint(song_x, SR)
    times, codes = fpm.decode_echoprint(fp.echoprintstring)
    assert np.array_equal(times, fp.code_times) and np.array_equal(codes, fp.codes)
    text = fpm.unpack(fp.echoprintstring)
    n = len(codes)
    assert len(text) == 10 * n and all(ch in "0123456789abcdef" for ch in text)
    assert int(text[:5], 16) == times[0] and int(text[5 * n : 5 * n + 5], 16) == codes[0]
    assert codes.max() < 2**20 and np.all(np.diff(times) >= 0)
    duration = len(song_x) / SR
    # the Echo Nest's own strings carry about 26 codes per second
    assert 8 < n / duration < 60, n / duration
    assert times[-1] * fpm.CODE_UNIT_S <= duration


def test_echoprint_codes_ignore_gain_and_follow_a_shift(song_x):
    x11 = fpm.to_11k(song_x, SR)
    p = fpm.FingerprintParams()
    _, t, c = fpm.echoprint_from_samples(x11, p)
    _, tq, cq = fpm.echoprint_from_samples(0.25 * x11, p)
    assert len(set(zip(c, t)) & set(zip(cq, tq))) >= 0.95 * len(c)
    # 40 units (0.93 s) of silence in front: the same codes, 40 units later
    pad = np.concatenate([np.zeros(40 * 256, dtype=np.float32), x11])
    _, ts, cs = fpm.echoprint_from_samples(pad, p)
    shifted = set(zip(cs, ts - 40))
    # whitening blocks and the adaptive threshold see the audio from a different start: most codes,
    # not all, come back (the catalog's look-up allows one unit either way, as here)
    found = sum(any((ci, ti + d) in shifted for d in (-1, 0, 1)) for ci, ti in zip(c, t))
    assert found >= 0.6 * len(c), found / len(c)


def test_rhythmstring_holds_the_onsets_of_a_click_track(fx):
    x = _load(fx["click_120_4-4"]["path"])
    truth = np.array(fx["click_120_4-4"]["beats"])
    fp = fpm.fingerprint(x, SR)
    assert fpm.unpack(fp.rhythmstring).startswith("11025 32 8 ")
    bands = fpm.decode_rhythm(fp.rhythmstring)
    assert len(bands) == 8
    # every band that fires fires on clicks: the detector marks an onset as its envelope falls
    # back, a few tens of ms after the click
    hits = np.concatenate([b for b in bands if len(b)])
    err = np.min(np.abs(hits[:, None] - truth[None, :]), axis=1)
    assert np.mean(err < 0.12) > 0.9, np.round(np.sort(err)[-10:], 3)
    assert max(len(b) for b in bands) >= 0.5 * len(truth) / (fpm.FingerprintParams().onset_target_frames * 32 / 11025 * 2)


def test_synchstring_decodes_to_the_zero_crossings_and_finds_a_decoder_shift(song_x):
    fp = fpm.fingerprint(song_x, SR)
    fs, chunks = fpm.decode_synch(fp.synchstring)
    assert fs == 22050 and len(chunks) == 3
    for start, offsets in chunks:
        seg = song_x[start : start + SR]
        assert np.array_equal(offsets, fpm.zero_crossings(seg))
    assert fpm.synch_offsets(fp.synchstring, song_x) == [0, 0, 0]
    # a decoder that adds 529 samples of priming in front (mp3 decoders differ by this much)
    later = np.concatenate([np.zeros(529, dtype=np.float32), song_x])
    assert fpm.synch_offsets(fp.synchstring, later) == [529, 529, 529]
    # one that drops the first 300 samples
    assert fpm.synch_offsets(fp.synchstring, song_x[300:]) == [-300, -300, -300]


def test_codestring_is_chromaprint_and_tells_songs_apart(song_x, fx):
    fp = fpm.fingerprint(song_x, SR)
    if fp.codestring is None:
        pytest.skip("libchromaprint is not installed")
    assert fp.code_version.startswith("chromaprint ")
    raw = fpm.decode_chromaprint(fp.codestring)
    # one 32-bit sub-fingerprint per 0.124 s
    assert abs(len(raw) - len(song_x) / SR / fpm.CHROMAPRINT_ITEM_S) < 25
    again = fpm.fingerprint(song_x.copy(), SR)
    assert again.codestring == fp.codestring
    other = fpm.decode_chromaprint(fpm.fingerprint(_load(fx["chords_d_major"]["path"]), SR).codestring)
    n = min(len(raw), len(other))
    ber = np.bitwise_count((raw[:n] ^ other[:n]).astype(np.uint32)).mean() / 32
    assert ber > 0.3


def test_bad_strings_are_decode_errors():
    for bad in ("not base64 at all!", fpm.pack("12345"), fpm.pack("22050 3 5")):
        with pytest.raises(DecodeError):
            fpm.decode_echoprint(bad) if bad != fpm.pack("22050 3 5") else fpm.decode_synch(bad)


def test_document_carries_all_four_strings(analyze_file, fx):
    doc, _ = analyze_file(fx["click_120_4-4"]["path"])
    tr = doc["track"]
    for key, version in (("echoprintstring", "echoprint_version"), ("synchstring", "synch_version"),
                         ("rhythmstring", "rhythm_version")):
        assert tr[key] and isinstance(tr[version], float)
    assert tr["echoprint_version"] == 4.12
    if "codestring" in tr:
        assert tr["code_version"].startswith("chromaprint")


# --- identification through the CLI -----------------------------------------------------------


def _cli(*args, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "analyzer.cli", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.fixture(scope="module")
def catalog(fx, tmp_path_factory):
    if "song" not in fx or "steady_loop" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed")
    if fpm.chromaprint_string(np.zeros(SR * 4, dtype=np.float32), SR)[0] is None:
        pytest.skip("libchromaprint is not installed")
    lib = tmp_path_factory.mktemp("library")
    for key in ("song", "steady_loop", "chords_d_major", "rubato_80", "click_100_3-4"):
        shutil.copy(fx[key]["path"], lib / Path(fx[key]["path"]).name)
    (lib / "broken.mp3").write_bytes(b"ID3 this is not audio")
    db = tmp_path_factory.mktemp("db") / "catalog.db"
    proc = _cli("index", lib, "--db", db)
    return {"dir": lib, "db": db, "first": proc}


def _mp3_clip(src, start_s: float, seconds: float, out, *, noise_snr_db: float | None = None):
    x = _load(src)[int(start_s * SR) : int((start_s + seconds) * SR)]
    if noise_snr_db is not None:
        rng = np.random.default_rng(3)
        n = rng.standard_normal(len(x)).astype(np.float32)
        x = x + n * np.sqrt(np.mean(x**2) / np.mean(n**2) / 10 ** (noise_snr_db / 10))
        x = x / max(1.0, float(np.abs(x).max()))
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-", "-b:a", "64k", str(out)]
    subprocess.run(cmd, input=x.astype("<f4").tobytes(), check=True)
    return out


def test_index_reports_the_bad_file_and_keeps_the_rest(catalog):
    first = catalog["first"]
    assert first.returncode == 1
    assert "broken.mp3" in first.stderr and "Traceback" not in first.stderr
    assert "5 indexed, 1 failed" in first.stderr
    with sqlite3.connect(catalog["db"]) as db:
        assert db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == 5
        # the look-up index: codes clustered by code
        assert "WITHOUT ROWID" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'codes'").fetchone()[0]
    # a second run only retries what failed
    again = _cli("index", catalog["dir"], "--db", catalog["db"])
    assert "0 indexed, 1 failed, 5 up to date" in again.stderr


@pytest.mark.parametrize("noise", [None, 10.0])
def test_identify_finds_a_degraded_10s_excerpt_and_where_it_starts(catalog, fx, tmp_path, noise):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    clip = _mp3_clip(fx["song"]["path"], 11.3, 10.0, tmp_path / "clip.mp3", noise_snr_db=noise)
    out = json.loads(_cli("identify", clip, "--db", catalog["db"], check_rc=0).stdout)
    assert out["match"] is not None, out
    assert out["match"]["path"].endswith(Path(fx["song"]["path"]).name)
    if noise is None:
        # (with noise the offset may land 4 bars away: the rendered song repeats its bars exactly)
        assert abs(out["match"]["offset_s"] - 11.3) < 0.1
    assert out["match"]["ber"] < 0.2 and out["lookup_ms"] < 500


def test_identify_reports_no_match_for_a_song_not_in_the_catalog(catalog, fx, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    for key in ("shuffle_100", "chords_a_minor", "tempo_90_120"):
        clip = _mp3_clip(fx[key]["path"], 2.0, 10.0, tmp_path / f"{key}.mp3")
        out = json.loads(_cli("identify", clip, "--db", catalog["db"], check_rc=0).stdout)
        assert out["match"] is None, (key, out["candidates"][:1])


def test_identify_errors_are_one_line(catalog, tmp_path):
    missing = _cli("identify", tmp_path / "nope.mp3", "--db", catalog["db"])
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    nodb = _cli("identify", catalog["dir"] / "broken.mp3", "--db", tmp_path / "none.db")
    assert nodb.returncode == 1 and "no such identification catalog" in nodb.stderr
    notdb = tmp_path / "x.db"
    notdb.write_text("hello, not sqlite")
    bad = _cli("identify", catalog["dir"] / "broken.mp3", "--db", notdb)
    assert bad.returncode == 1 and "not an identification catalog" in bad.stderr and "Traceback" not in bad.stderr
