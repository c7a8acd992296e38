"""Issue 28, items 3-18: what a hostile but fair user found in serve, index, features, Parquet and the
Python API, each reproduced here.  (Items 1-2, the library's data loss, are in test_library_robust.py.)

Analyses use `_library_fakes` (real decoding, one real document as the template) where the
analysis itself is not what is tested.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from analyzer.cli import app as analyze_app
from analyzer.cli import catalog_app
from analyzer.errors import AnalyzerError, InputError, ParameterError
from analyzer.library.store import MAX_SEARCH_WORDS, Indexer, LibraryStore, shown_url
from fixtures import synth

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _library_fakes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-c", "from analyzer.cli import main; main()", "serve"]
ANALYZE = [sys.executable, "-c", "from analyzer.cli import main; main()"]


def one_line_error(text: str, *words: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text
    for w in words:
        assert w in lines[0], (w, lines[0])


def wav(path: Path, *, bpm: float, seconds: float = 2.0) -> Path:
    x, sr, _ = synth.click_track(bpm=bpm, beats_per_bar=4, seconds=seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth.encode(path, x, sr)
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


@pytest.fixture
def quick(monkeypatch, library_template):
    import analyzer.run.batch as batch

    monkeypatch.setattr(batch, "analyze_path", _library_fakes.decoded_document)


@pytest.fixture
def indexed(tmp_path, quick):
    """A library of two files, indexed: (Indexer, {name: id})."""
    lib = tmp_path / "lib"
    wav(lib / "one.wav", bpm=100, seconds=30)  # a document over 1000 bytes: gzip applies
    wav(lib / "two.wav", bpm=130)
    ix = Indexer(LibraryStore(tmp_path / "x.db", lib), settle_s=0)
    ix.run_pass()
    yield ix, {p: f.track_id for p, f in ix.store.files().items()}
    ix.store.close()


def asgi_get(app, url: str, *, host: str = "127.0.0.1", headers: dict | None = None):
    import httpx

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}") as client:
            return await client.get(url, headers=headers or {})

    return asyncio.run(run())


# --- 3. a search of 1000 words -------------------------------------------------------------------------

def test_a_search_of_many_words_is_refused_with_400_not_500(indexed):
    from analyzer.library.serve import build_app

    ix, ids = indexed
    app = build_app(ix.store, ix)
    many = " ".join(f"w{i}" for i in range(1000))
    r = asgi_get(app, f"/v1/search?type=track&q={many}")
    assert r.status_code == 400 and f"at most {MAX_SEARCH_WORDS}" in r.json()["error"]["message"]
    with pytest.raises(InputError):
        ix.store.search(many, limit=10, offset=0)
    # at the bound, and repeated words (counted once), it answers
    assert ix.store.search(" ".join(["one"] * 1000), limit=10, offset=0)[1] == 1
    words = " ".join(["one"] + [f"x{i}" for i in range(MAX_SEARCH_WORDS - 1)])
    assert asgi_get(app, f"/v1/search?type=track&q={words}").json()["tracks"]["total"] == 0


# --- 4. truncated WAV and Ogg ------------------------------------------------------------------------------

def _truncated(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_truncated_wav_and_ogg_are_refused_or_with_allow_truncated_analysed_and_marked(tmp_path):
    from analyzer.stages.audio import DecodeParams, decode
    from analyzer.errors import DecodeError

    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=5)
    whole_wav = tmp_path / "whole.wav"
    synth.encode(whole_wav, x, sr)
    whole_ogg = ROOT / "fixtures" / "demo" / "demo.ogg"
    for src, keep in ((whole_wav, 0.45), (whole_ogg, 0.42)):
        cut = _truncated(src, tmp_path / ("cut" + src.suffix), keep)
        with pytest.raises(DecodeError, match="truncated"):
            decode(cut)
        audio = decode(cut, params=DecodeParams(allow_truncated=True))
        assert audio.source.truncated and audio.duration_s < 0.6 * decode(src).duration_s
        decode(src)  # the whole file is not taken for a truncated one
        assert not decode(src).source.truncated


def test_analyze_refuses_a_truncated_wav_in_one_line(tmp_path):
    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=5)
    whole = tmp_path / "whole.wav"
    synth.encode(whole, x, sr)
    cut = _truncated(whole, tmp_path / "cut.wav", 0.45)
    proc = subprocess.run([*ANALYZE, str(cut)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    one_line_error(proc.stderr, "truncated", "--allow-truncated")


def test_the_document_of_a_truncated_file_analysed_anyway_says_so():
    from types import SimpleNamespace

    from analyzer.document import _meta

    def meta(truncated):
        source = SimpleNamespace(path="/m/a.wav", tags={}, bitrate_kbps=1411, sample_rate_hz=44100, channels=2,
                                 file_duration_s=5.0, input_process="pcm_s16le", truncated=truncated)
        return _meta(SimpleNamespace(audio=SimpleNamespace(source=source)), timestamp=0, analysis_time_s=0.0)

    assert meta(None)["detailed_status"] == "OK"
    assert meta("decoded 2.2 s of 5.0 s")["detailed_status"] == "OK: truncated (decoded 2.2 s of 5.0 s)"


def test_an_ogg_cut_at_a_page_boundary_is_truncated_too(tmp_path):
    from analyzer.stages.audio import _cut_short

    data = (ROOT / "fixtures" / "demo" / "demo.ogg").read_bytes()
    at = data.rfind(b"OggS", 0, len(data) // 2)  # a page boundary mid-file
    assert _cut_short(Path("x.ogg"), data[:at]) == ("no Ogg page ends the stream", None)
    assert _cut_short(Path("x.ogg"), data) is None


def test_serve_refuses_a_truncated_file_unless_allowed(tmp_path, quick):
    from analyzer.stages.audio import DecodeParams
    from analyzer.run.batch import RunOptions

    lib = tmp_path / "lib"
    whole = wav(lib / "whole.wav", bpm=100, seconds=5)
    cut = _truncated(whole, lib / "cut.wav", 0.45)
    old = time.time() - 60
    os.utime(cut, (old, old))
    ix = Indexer(LibraryStore(tmp_path / "x.db", lib), settle_s=0)
    ix.run_pass()
    assert [f["path"] for f in ix.store.failures()] == ["cut.wav"] and "truncated" in ix.store.failures()[0]["reason"]
    ix.store.close()
    ix = Indexer(LibraryStore(tmp_path / "y.db", lib), RunOptions(decode=DecodeParams(allow_truncated=True)),
                 settle_s=0)
    ix.run_pass()
    assert ix.store.counts()["analysed"] == 2
    ix.store.close()


# --- 5. a database where none can be made --------------------------------------------------------------------

@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_serve_where_no_database_can_be_made_says_so_in_one_line(tmp_path, where):
    (tmp_path / "file").write_text("x")
    db = tmp_path / "file" / "lib.db" if where == "under-a-file" else Path("/proc/no-such-dir/lib.db")
    res = CliRunner().invoke(catalog_app, ["serve", str(tmp_path), "--db", str(db)])
    assert res.exit_code == 1, res.output
    one_line_error(res.stderr, "cannot make the music library database")


def test_serve_in_a_folder_it_cannot_write_says_so_in_one_line(tmp_path, monkeypatch):
    # as root, mode 555 does not stop us: the error another user gets is raised by mkdir itself
    def refuse(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    res = CliRunner().invoke(catalog_app, ["serve", str(tmp_path)])
    assert res.exit_code == 1
    one_line_error(res.stderr, "Permission denied")


# --- 6. another program's database is refused untouched ---------------------------------------------------------

def test_another_programs_database_is_refused_with_its_header_untouched(tmp_path):
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE songs (x)")
    con.execute("INSERT INTO songs VALUES (1)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    assert before[18:20] == b"\x01\x01"  # rollback journal
    with pytest.raises(InputError, match="another program's database"):
        LibraryStore(foreign, tmp_path)
    assert foreign.read_bytes() == before
    # a newer version's too
    newer = tmp_path / "newer.db"
    con = sqlite3.connect(newer)
    con.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (99);")
    con.close()
    before = newer.read_bytes()
    with pytest.raises(InputError, match="newer analyze"):
        LibraryStore(newer, tmp_path)
    assert newer.read_bytes() == before
    # ours is in WAL mode
    ours = tmp_path / "ours.db"
    LibraryStore(ours, tmp_path).close()
    assert ours.read_bytes()[18:20] == b"\x02\x02"


# --- 7-8. Parquet: where it cannot be written, and a damaged table ------------------------------------------------

@pytest.mark.parametrize("where", ["proc", "under-a-file", "sys"])
def test_parquet_where_it_cannot_be_written_is_one_line(tmp_path, where, quick):
    # /proc refuses new files (ENOENT) and /sys is read-only (EACCES), even to root, whom mode 555 would not stop
    pytest.importorskip("pyarrow")
    song = wav(tmp_path / "in" / "a.wav", bpm=100)
    (tmp_path / "file").write_text("x")
    out = {"proc": Path("/proc/t.parquet"), "under-a-file": tmp_path / "file" / "t.parquet",
           "sys": Path("/sys/t.parquet")}[where]
    res = CliRunner().invoke(analyze_app, [str(song.parent), "--format", "parquet", "-o", str(out), "--jobs", "1"])
    assert res.exit_code == 1, (res.output, res.exception)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "cannot write" in errors[0] and "Traceback" not in res.stderr, res.stderr


def test_a_damaged_parquet_table_is_not_trusted_for_resume(tmp_path, quick):
    pytest.importorskip("pyarrow")
    src = tmp_path / "in"
    wav(src / "a.wav", bpm=100)
    wav(src / "b.wav", bpm=120)
    table = tmp_path / "t.parquet"
    args = [str(src), "--format", "parquet", "-o", str(table), "--jobs", "1"]
    assert CliRunner().invoke(analyze_app, args).exit_code == 0
    again = CliRunner().invoke(analyze_app, args)
    assert again.exit_code == 0 and "2 up to date" in again.stderr
    data = bytearray(table.read_bytes())
    rng = np.random.default_rng(28)
    for i in rng.choice(np.arange(8, len(data) - 8), 64, replace=False):  # the PAR1 marks kept
        data[i] ^= 0xFF
    table.write_bytes(bytes(data))
    res = CliRunner().invoke(analyze_app, args)
    assert res.exit_code == 1 and "up to date" not in res.stderr
    one_line_error(res.stderr, "damaged")
    assert table.read_bytes() == bytes(data)  # refused, left as it is


def test_recommend_ingest_refuses_a_damaged_table_in_one_line(tmp_path, quick):
    pytest.importorskip("pyarrow")
    src = tmp_path / "in"
    wav(src / "a.wav", bpm=100)
    table = tmp_path / "t.parquet"
    assert CliRunner().invoke(analyze_app, [str(src), "--format", "parquet", "-o", str(table), "--jobs", "1"]
                              ).exit_code == 0
    data = bytearray(table.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    table.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-c", "from recommender.cli import main; main()", "ingest", str(table),
                           "--model", str(tmp_path / "model")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    one_line_error(proc.stderr, "t.parquet")


# --- 9. NaN samples ----------------------------------------------------------------------------------------------

def test_nan_samples_are_bad_input_everywhere(tmp_path):
    import soundfile

    import analyzer

    x = np.sin(np.arange(22050 * 3) * 0.05).astype(np.float32)
    x[1000:1010] = np.nan
    bad = tmp_path / "nan.wav"
    soundfile.write(bad, x, 22050, subtype="FLOAT")
    with pytest.raises(AnalyzerError, match="not numbers"):
        analyzer.analyze_file(bad)
    proc = subprocess.run([*ANALYZE, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    one_line_error(proc.stderr, "not numbers")


# --- 10. recommend fit on small data ---------------------------------------------------------------------------------

def test_recommend_fit_on_small_data_fits_and_says_what_is_too_small_to_tune(tmp_path):
    rng = np.random.default_rng(10)
    plays = tmp_path / "plays.tsv"
    rows = []
    for u in range(60):
        for item in rng.choice(46, 8, replace=False):
            rows.append(f"u{u}\titem{item}\t{int(rng.integers(1, 20))}")
    plays.write_text("user\titem\tplays\n" + "\n".join(rows) + "\n")
    run = [sys.executable, "-c", "from recommender.cli import main; main()"]
    model = tmp_path / "model"
    proc = subprocess.run([*run, "import-plays", str(plays), "--model", str(model)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*run, "fit", "--model", str(model)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "too little data to tune: no listener has 10 or more items" in proc.stderr
    proc = subprocess.run([*run, "playlist", "--model", str(model), "--user", "u0", "-n", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["items"]) == 3


# --- 11. features on a document with a bad sample_md5 -------------------------------------------------------------------

def test_features_on_a_document_with_a_bad_sample_md5_is_one_line(tmp_path, library_template):
    doc = json.loads(Path(library_template).read_bytes())
    doc["track"]["sample_md5"] = "zz"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    res = CliRunner().invoke(catalog_app, ["features", str(bad)])
    assert res.exit_code == 1 and res.stdout == ""
    one_line_error(res.stderr, "bad.json", "32 hex digits")


# --- 12-13. Host headers and Accept-Encoding -------------------------------------------------------------------------

def test_only_the_servers_own_host_names_are_answered_without_a_token(indexed):
    from analyzer.library.serve import build_app

    ix, ids = indexed
    tid = ids["one.wav"]
    app = build_app(ix.store, ix)
    for host in ("127.0.0.1:8800", "localhost:8800", "[::1]:8800", "LOCALHOST"):
        assert asgi_get(app, f"/v1/tracks/{tid}", host=host).status_code == 200, host
    r = asgi_get(app, f"/v1/tracks/{tid}", host="evil.example:8800")
    assert r.status_code == 421 and "evil.example" not in r.json().get("href", "")
    assert asgi_get(app, "/v1/search?q=one&type=track", host="attacker.test").status_code == 421
    # with a token, the token guards the API: any name
    guarded = build_app(ix.store, ix, token="t")
    assert asgi_get(guarded, f"/v1/tracks/{tid}", host="music.lan", headers={"Authorization": "Bearer t"}
                    ).status_code == 200


def test_gzip_refused_with_q0_is_not_sent(indexed):
    from analyzer.library.serve import accepts_gzip, build_app

    assert not accepts_gzip("gzip;q=0, identity") and not accepts_gzip("identity") and not accepts_gzip("")
    assert accepts_gzip("gzip") and accepts_gzip("deflate, gzip;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("*, gzip;q=0") and not accepts_gzip("gzip;q=0.000")
    ix, ids = indexed
    app = build_app(ix.store, ix)
    for url in (f"/v1/audio-analysis/{ids['one.wav']}", "/v1/library/status", "/v1/search?q=wav&type=track"):
        refused = asgi_get(app, url, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert refused.status_code == 200 and "content-encoding" not in refused.headers, url
    taken = asgi_get(app, f"/v1/audio-analysis/{ids['one.wav']}", headers={"Accept-Encoding": "gzip"})
    assert taken.headers["content-encoding"] == "gzip"


# --- 14, 16. SIGTERM and a port in use ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_serve_exits_143(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([*SERVE, str(tmp_path), "--port", str(port), "--db", str(tmp_path / "x.db")],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("serving "), line
        import httpx

        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/library/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_a_port_in_use_is_one_line_and_exit_1_before_serving(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([*SERVE, str(tmp_path), "--port", str(port), "--db", str(tmp_path / "x.db")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "serving" not in proc.stderr
    one_line_error(proc.stderr, "in use")


# --- 15. a password in the query of a PostgreSQL URL ------------------------------------------------------------

def test_a_postgresql_password_is_never_shown(tmp_path):
    url = "postgresql://user:pw1@127.0.0.1:1/db?sslmode=disable&password=hunter2"
    assert "hunter2" not in shown_url(url) and "pw1" not in shown_url(url)
    assert shown_url(url) == "postgresql://127.0.0.1:1/db?sslmode=disable&password=***"
    res = CliRunner().invoke(catalog_app, ["serve", str(tmp_path), "--db", url])
    assert res.exit_code == 1
    one_line_error(res.stderr)
    assert "hunter2" not in res.stderr and "pw1" not in res.stderr


# --- 17. non-finite numbers in options ----------------------------------------------------------------------------

@pytest.mark.parametrize("app_, args", [
    (catalog_app, ["serve", "LIB", "--poll", "nan"]),
    (catalog_app, ["serve", "LIB", "--poll", "inf"]),
    (catalog_app, ["serve", "LIB", "--max-duration", "nan"]),
    (catalog_app, ["index", "LIB", "--db", "LIB/c.db", "--max-duration", "nan"]),
    (catalog_app, ["identify", "LIB/a.wav", "--db", "LIB/c.db", "--offset", "inf"]),
    (analyze_app, ["LIB/a.wav", "--offset", "nan"]),
    (analyze_app, ["LIB/a.wav", "--duration", "inf"]),
    (analyze_app, ["LIB/a.wav", "--max-duration", "nan"]),
])
def test_non_finite_numbers_are_refused_in_every_option(tmp_path, app_, args):
    res = CliRunner().invoke(app_, [a.replace("LIB", str(tmp_path)) for a in args])
    assert res.exit_code == 2, res.output
    one_line_error(res.stderr, "finite")


def test_non_finite_numbers_are_refused_by_the_library_and_the_api(tmp_path):
    import analyzer
    from analyzer.stages.audio import DecodeParams, decode

    with pytest.raises(ParameterError):
        Indexer(LibraryStore(tmp_path / "x.db", tmp_path), poll_s=float("inf"))
    with pytest.raises(ParameterError):
        Indexer(LibraryStore(tmp_path / "y.db", tmp_path), poll_s=float("nan"))
    song = wav(tmp_path / "a.wav", bpm=100)
    with pytest.raises(ParameterError):
        decode(song, params=DecodeParams(max_duration_s=float("nan")))
    with pytest.raises(AnalyzerError):
        analyzer.analyze_file(song, offset=float("nan"))


# --- 18. features name their source ---------------------------------------------------------------------------------

def test_every_features_object_names_its_source_and_follows_the_schema(tmp_path, quick, library_template):
    import jsonschema

    schema = json.loads((ROOT / "schema" / "audio_features.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    a = wav(tmp_path / "a.wav", bpm=100)
    b = wav(tmp_path / "b.wav", bpm=140)
    doc = tmp_path / "saved.json"
    doc.write_bytes(Path(library_template).read_bytes())
    res = CliRunner().invoke(catalog_app, ["features", str(a), str(doc), str(b), "--jobs", "1"])
    assert res.exit_code == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(o["path"] for o in objs) == sorted([str(a), str(doc), str(b)])
    for o in objs:
        jsonschema.validate(o, schema)
    by_path = {o["path"]: o for o in objs}
    assert by_path[str(a)]["id"] != by_path[str(b)]["id"]


# --- guessing the token: 10 wrong ones a minute, then 429 ---------------------------------------------------------

def _asgi(app, calls):
    """Run (method, url, kwargs) calls in order against the app; their responses."""
    import httpx

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return [await client.request(method, url, **kw) for method, url, kw in calls]

    return asyncio.run(run())


def test_wrong_tokens_are_throttled_at_the_form_and_as_a_bearer_and_a_session_goes_on(indexed):
    from analyzer.library.serve import build_app
    from analyzer.library.web import Guesses

    now = [1000.0]
    guesses = Guesses(max_failures=3, window_s=60.0, clock=lambda: now[0])
    app = build_app(indexed[0].store, indexed[0], token="sesame", guesses=guesses)
    good = {"headers": {"Authorization": "Bearer sesame"}}
    bad = {"headers": {"Authorization": "Bearer nope"}}
    # a login first: its cookie must outlast the attack
    login = _asgi(app, [("POST", "/login", {"data": {"token": "sesame"}})])[0]
    assert login.status_code == 303
    cookie = {"headers": {"Cookie": "; ".join(f"{k}={v}" for k, v in login.cookies.items())}}
    # two wrong bearers and one wrong form: the third wrong token fills the window
    r = _asgi(app, [("GET", "/v1/library/status", bad), ("GET", "/v1/library/status", bad),
                    ("POST", "/login", {"data": {"token": "open"}})])
    assert [x.status_code for x in r] == [401, 401, 401]
    # now every new token waits, the right one too, at the API and at the form
    r = _asgi(app, [("GET", "/v1/library/status", good), ("POST", "/login", {"data": {"token": "sesame"}}),
                    ("GET", "/v1/library/status", bad)])
    assert [x.status_code for x in r] == [429, 429, 429]
    assert all(1 <= int(x.headers["retry-after"]) <= 60 for x in r)
    assert r[0].json()["error"]["status"] == 429
    # the logged-in browser is not guessing
    assert _asgi(app, [("GET", "/v1/library/status", cookie)])[0].status_code == 200
    # no token at all is no guess: it gets the usual 401
    assert _asgi(app, [("GET", "/v1/library/status", {})])[0].status_code == 401
    # a minute after the first failure the window has room again
    now[0] += 60.5
    assert _asgi(app, [("GET", "/v1/library/status", good)])[0].status_code == 200
