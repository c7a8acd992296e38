"""`analyze serve`: the library database, the indexer and the Spotify-shaped Web API, with real clients.

The module's library (the demo song and a tagged 15 s click track) is analysed once, for real,
in this process; the server then runs as `analyze serve` in a subprocess on it, and spotipy,
httpx and the Infinite Jukebox's branch finder read from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer.errors import InputError
from analyzer.library.store import MIGRATIONS, Indexer, LibraryStore, open_library, track_id
from fixtures import synth

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "demo" / "demo.ogg"
JUKEBOX = ROOT.parent / "shared" / "clients" / "jukebox" / "jukebox.mjs"
SERVE = [sys.executable, "-c", "from analyzer.cli import main; main()", "serve"]
TOKEN = "test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout_s: float, what: str, interval_s: float = 0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        got = check()
        if got:
            return got
        time.sleep(interval_s)
    raise AssertionError(f"waited {timeout_s} s for {what}")


def _clicks(path: Path, *, bpm: float, seconds: float, tags: dict | None = None) -> Path:
    x, sr, _ = synth.click_track(bpm=bpm, beats_per_bar=4, seconds=seconds)
    synth.encode(path, x, sr, metadata=tags)
    return path


class Server:
    def __init__(self, lib: Path, *args: str, token: str | None = TOKEN, db: str | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        cmd = [*SERVE, str(lib), "--port", str(self.port), "--poll", "0.5", *args]
        if db:
            cmd += ["--db", db]
        if token:
            cmd += ["--token", token]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait(self._up, 60, "the server to answer")

    def _up(self) -> bool:
        import httpx

        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
        try:
            return httpx.get(self.base + "/v1/library/status", headers=self.headers, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **kw):
        import httpx

        return httpx.get(self.base + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=30, **kw)

    def status(self) -> dict:
        return self.get("/v1/library/status").json()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


BACKENDS = ["sqlite", "postgresql"]  # every library and server test runs on both


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A library folder analysed once, into SQLite: {"dir", "demo", "clicks"} (ids)."""
    lib = tmp_path_factory.mktemp("library")
    (lib / "albums").mkdir()
    shutil.copy(DEMO, lib / "albums" / "demo.ogg")
    _clicks(lib / "clicks.mp3", bpm=120, seconds=15, tags=synth.TAGS)
    store = open_library(lib)
    t0 = time.perf_counter()
    assert Indexer(store, settle_s=0).run_pass() == 2
    print(f"\nlibrary analysed in {time.perf_counter() - t0:.1f} s")
    ids = {"dir": lib, "demo": store.lookup("albums/demo.ogg"), "clicks": store.lookup("clicks.mp3")}
    store.close()
    return ids


@pytest.fixture(scope="module", params=BACKENDS)
def library(request, analysed, tmp_path_factory):
    """The analysed library in each database: {"dir", "db" (None: SQLite in the folder), "demo", "clicks"}.

    For PostgreSQL, a copy of the folder whose files' documents are copied from the SQLite one (the
    same bytes; nothing is analysed again, and the indexer finds every file up to date)."""
    if request.param == "sqlite":
        return {**analysed, "db": None}
    url = request.getfixturevalue("pg_cluster").database()
    lib = tmp_path_factory.mktemp("library_pg")
    src = open_library(analysed["dir"])
    dst = LibraryStore(url, lib)
    try:
        for rel in ("albums/demo.ogg", "clicks.mp3"):
            (lib / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(analysed["dir"] / rel, lib / rel)
            raw, _ = src.document(src.lookup(rel))
            st = (lib / rel).stat()
            dst.put_document(rel, mtime_ns=st.st_mtime_ns, size=st.st_size, document=raw, doc=json.loads(raw))
        assert dst.kind == "postgresql" and dst.counts()["tracks"] == 2
    finally:
        src.close()
        dst.close()
    return {**analysed, "dir": lib, "db": url}


@pytest.fixture(params=BACKENDS)
def new_db(request):
    """None (a new folder's SQLite file) or a new, empty PostgreSQL database's URL."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_cluster").database()


def _open(library: dict):
    return open_library(library["dir"], library["db"])


@pytest.fixture(scope="module")
def server(library):
    s = Server(library["dir"], db=library["db"])
    yield s
    s.stop()


# --- the database -------------------------------------------------------------------------------

def test_ids_are_22_base62_characters_of_the_sample_md5(library):
    assert track_id("0" * 32) == "0" * 22
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for md5 in ("f" * 32, "0123456789abcdef" * 2, "0" * 31 + "1"):
        tid = track_id(md5)
        assert len(tid) == 22 and sum(alphabet.index(c) * 62 ** i for i, c in enumerate(reversed(tid))) == int(md5, 16)
    store = _open(library)
    doc = json.loads(store.document(library["demo"])[0])
    store.close()
    assert library["demo"] == track_id(doc["track"]["sample_md5"])
    with pytest.raises(InputError, match="32 hex digits"):
        track_id("xyz")


def test_schema_is_versioned_and_migrated_in_order(tmp_path):
    db = tmp_path / "lib.db"
    LibraryStore(db, tmp_path).close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    # an older database (no step applied yet) is brought up to date when opened
    old = tmp_path / "old.db"
    c2 = sqlite3.connect(old)
    c2.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (0);")
    c2.close()
    store = LibraryStore(old, tmp_path)
    assert store.schema_version() == len(MIGRATIONS) and store.counts()["files"] == 0
    store.close()
    # a newer one, another program's, and a file that is not a database are refused untouched
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="newer analyze"):
        LibraryStore(db, tmp_path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).executescript("CREATE TABLE songs (x);")
    with pytest.raises(InputError, match="another program's database"):
        LibraryStore(other, tmp_path)
    text = tmp_path / "notes.db"
    text.write_text("not a database at all " * 100)
    with pytest.raises(InputError, match="not an SQLite"):
        LibraryStore(text, tmp_path)


# --- real clients ---------------------------------------------------------------------------------

def test_spotipy_reads_analysis_features_and_tracks(server, library):
    spotipy = pytest.importorskip("spotipy")
    sp = spotipy.Spotify(auth=TOKEN, requests_timeout=30, retries=0)
    sp.prefix = server.base + "/v1/"  # spotipy 2.26 dropped the `prefix` argument; the attribute stays
    store = _open(library)
    stored = json.loads(store.document(library["demo"])[0])
    store.close()
    with pytest.warns(DeprecationWarning):  # spotipy marks both deprecated (Spotify removed them)
        assert sp.audio_analysis(library["demo"]) == stored
        feats = sp.audio_features([library["demo"], library["clicks"], "0" * 22])
    demo, clicks, unknown = feats
    assert unknown is None
    assert demo["type"] == "audio_features" and demo["id"] == library["demo"]
    assert (demo["tempo"], demo["key"], demo["mode"]) == (stored["track"]["tempo"], 5, 1)
    assert demo["duration_ms"] == round(stored["track"]["duration"] * 1000)
    assert clicks["tempo"] == pytest.approx(120, rel=0.04)
    assert set(demo) >= {"danceability", "energy", "valence", "acousticness", "instrumentalness", "speechiness",
                         "liveness", "loudness", "time_signature", "analysis_url", "track_href", "uri"}
    track = sp.track(library["clicks"])
    assert track["name"] == synth.TAGS["title"] and track["artists"][0]["name"] == synth.TAGS["artist"]
    assert track["album"]["name"] == synth.TAGS["album"] and track["type"] == "track"
    assert sp.track(library["demo"])["name"] == "demo"  # no tags: the file name
    # a result's uri goes back in as it is
    with pytest.warns(DeprecationWarning):
        assert sp.audio_features([track["uri"]])[0]["id"] == library["clicks"]


def test_the_jukebox_finds_branches_in_the_served_analysis(server, library, tmp_path):
    if shutil.which("node") is None or not JUKEBOX.is_file():
        pytest.skip("node or ../shared/clients/jukebox is missing")
    doc = tmp_path / "served.json"
    doc.write_bytes(server.get(f"/v1/audio-analysis/{library['demo']}").content)
    proc = subprocess.run(["node", str(JUKEBOX), str(doc), str(doc)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    print(out["candidate"])
    assert out["candidate"]["edges"] > 0 and out["candidate"]["branching_share"] > 0


# --- the API's manners ----------------------------------------------------------------------------

def test_errors_are_spotify_error_objects(server, library):
    import httpx

    def err(r, status):
        assert r.status_code == status, r.text
        body = r.json()
        assert body["error"]["status"] == status and body["error"]["message"]
        return body["error"]["message"]

    assert "No token" in err(httpx.get(server.base + f"/v1/tracks/{library['demo']}"), 401)
    assert "Invalid" in err(httpx.get(server.base + "/v1/tracks/x", headers={"Authorization": "Bearer no"}), 401)
    assert "invalid id" in err(server.get("/v1/tracks/abc"), 400)
    assert "no track" in err(server.get("/v1/audio-analysis/" + "0" * 22), 404)
    err(server.get("/v1/nothing-here"), 404)
    err(httpx.post(server.base + f"/v1/tracks/{library['demo']}", headers=server.headers), 405)
    assert "no recommendation model" in err(server.get(f"/v1/recommendations?seed_tracks={library['demo']}"), 404)
    err(server.get("/v1/search?type=track"), 400)
    err(server.get("/v1/search?q=a&type=track&limit=x"), 400)


def test_documents_have_etags_and_come_gzipped(server, library):
    r = server.get(f"/v1/audio-analysis/{library['demo']}", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    etag = r.headers["etag"]
    again = server.get(f"/v1/audio-analysis/{library['demo']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    plain = server.get(f"/v1/audio-analysis/{library['demo']}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == r.json()
    f = server.get(f"/v1/audio-features/{library['demo']}")
    assert server.get(f"/v1/audio-features/{library['demo']}",
                      headers={"If-None-Match": f.headers["etag"]}).status_code == 304


def test_every_etag_in_one_query_equals_each_one(library):
    store = _open(library)
    try:
        everything = store.etags()
        assert set(everything) == {library["demo"], library["clicks"]}
        assert all(everything[tid] == store.etag(tid) for tid in everything)
    finally:
        store.close()


def test_search_pages_over_tags_and_paths_and_lookup_gives_ids(server, library):
    hits = server.get("/v1/search", params={"q": "fixture ENSEMBLE", "type": "track"}).json()["tracks"]
    assert [t["id"] for t in hits["items"]] == [library["clicks"]] and hits["total"] == 1
    assert server.get("/v1/search", params={"q": "albums/demo", "type": "track"}).json()["tracks"]["total"] == 1
    page = server.get("/v1/search", params={"q": "o", "type": "track", "limit": 1}).json()["tracks"]
    assert page["total"] == 2 and len(page["items"]) == 1 and page["next"] and page["previous"] is None
    second = server.get(page["next"].replace(server.base, "")).json()["tracks"]
    assert second["offset"] == 1 and second["items"][0]["id"] != page["items"][0]["id"]
    assert server.get("/v1/search", params={"q": "100%_", "type": "track"}).json()["tracks"]["total"] == 0
    assert server.get("/v1/library/lookup", params={"path": "albums/demo.ogg"}).json()["id"] == library["demo"]
    absolute = str(library["dir"] / "clicks.mp3")
    assert server.get("/v1/library/lookup", params={"path": absolute}).json()["id"] == library["clicks"]
    assert server.get("/v1/library/lookup", params={"path": "../x.mp3"}).status_code == 400
    both = server.get("/v1/tracks", params={"ids": f"{library['demo']},{'0' * 22}"}).json()["tracks"]
    assert both[0]["id"] == library["demo"] and both[1] is None


def test_200_concurrent_requests_for_documents(server, library):
    import httpx

    ids = [library["demo"], library["clicks"]]

    async def run():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.base, headers=server.headers, limits=limits,
                                     timeout=60) as client:
            async def one(i):
                t0 = time.perf_counter()
                r = await client.get(f"/v1/audio-analysis/{ids[i % 2]}")
                return r.status_code, len(r.content), time.perf_counter() - t0

            return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(run())
    errors = [r for r in results if r[0] != 200 or r[1] == 0]
    times = sorted(r[2] for r in results)
    print(f"\n200 concurrent document requests: p50 {times[99] * 1000:.0f} ms, p95 {times[189] * 1000:.0f} ms, "
          f"max {times[-1] * 1000:.0f} ms")
    assert not errors


def test_recommendations_map_library_ids_through_the_model_names(library):
    import httpx

    from analyzer.library.serve import build_app

    asked = []

    def recommend(seeds, n):  # a model that knows the items by file name, as `recommend ingest --id path` names them
        asked.append(seeds)
        return ["demo", "not in the library", "clicks"]

    async def get(app, path, **params):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return await client.get(path, params=params)

    store = _open(library)
    try:
        app = build_app(store, recommend=recommend)
        body = asyncio.run(get(app, "/v1/recommendations", seed_tracks=library["clicks"], limit=5)).json()
        assert [t["id"] for t in body["tracks"]] == [library["demo"]]
        assert body["seeds"][0]["id"] == library["clicks"] and body["seeds"][0]["type"] == "TRACK"
        assert asked[0] == [["clicks", f"{synth.TAGS['artist']} - {synth.TAGS['title']}"]]
        assert asyncio.run(get(app, "/v1/recommendations", seed_tracks="0" * 22)).status_code == 404
        assert asyncio.run(get(app, "/v1/recommendations")).status_code == 400
    finally:
        store.close()


# --- the audio and the page's way in ----------------------------------------------------------------

def test_audio_is_served_with_ranges_and_conditional_requests(server, library):
    path = f"/v1/tracks/{library['demo']}/audio"
    data = (library["dir"] / "albums" / "demo.ogg").read_bytes()
    size = len(data)
    whole = server.get(path)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/ogg" and whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == size and "content-encoding" not in whole.headers
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    # Range: first bytes, an open end, the last bytes, an end past the file
    for asked, (first, last) in {"bytes=0-99": (0, 99), "bytes=1000-": (1000, size - 1),
                                 "bytes=-10": (size - 10, size - 1), f"bytes=5-{size + 50}": (5, size - 1)}.items():
        r = server.get(path, headers={"Range": asked, "Accept-Encoding": "gzip"})
        assert r.status_code == 206, asked
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}" and r.content == data[first:last + 1]
        assert "content-encoding" not in r.headers
    bad = server.get(path, headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"
    assert server.get(path, headers={"Range": "bytes=0-1,5-9"}).status_code == 200  # several ranges: the whole
    assert server.get(path, headers={"Range": "lines=1-2"}).status_code == 200
    # conditional requests
    assert server.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert server.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert server.get(path, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}).status_code == 200
    assert server.get(path, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    stale = server.get(path, headers={"Range": "bytes=0-9", "If-Range": '"an older file"'})
    assert stale.status_code == 200 and stale.content == data
    import httpx

    head = httpx.head(server.base + path, headers=server.headers)
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    mp3 = server.get(f"/v1/tracks/{library['clicks']}/audio", headers={"Range": "bytes=0-3"})
    assert mp3.status_code == 206 and mp3.headers["content-type"] == "audio/mpeg"
    # only the library's files, through the id
    assert server.get("/v1/tracks/" + "0" * 22 + "/audio").status_code == 404
    assert server.get("/v1/tracks/..%2F..%2Fetc%2Fpasswd/audio").status_code in (400, 404)
    assert httpx.get(server.base + path).status_code == 401


def _clicks_document_and_empty_folder(library, tmp_path):
    """The stored document of the clicks track, and an empty folder for a library of its own."""
    src = _open(library)
    raw, _ = src.document(library["clicks"])
    src.close()
    lib = tmp_path / "lib"
    lib.mkdir()
    return raw, lib


def test_audio_of_a_link_that_leads_out_of_the_folder_is_not_served(library, tmp_path):
    from analyzer.library.web import audio_file

    raw, lib = _clicks_document_and_empty_folder(library, tmp_path)
    outside = tmp_path / "outside.mp3"
    shutil.copy(library["dir"] / "clicks.mp3", outside)
    (lib / "inside.mp3").symlink_to(outside)
    store = open_library(lib)
    try:
        st = outside.stat()
        tid = store.put_document("inside.mp3", mtime_ns=st.st_mtime_ns, size=st.st_size, document=raw,
                                 doc=json.loads(raw))
        assert audio_file(store, tid) is None
        (lib / "inside.mp3").unlink()
        shutil.copy(outside, lib / "inside.mp3")
        found = audio_file(store, tid)
        assert found is not None and found[0] == (lib / "inside.mp3").resolve()
    finally:
        store.close()


def test_audio_of_a_file_whose_name_is_not_utf8_is_served(library, tmp_path):
    # the database keeps such a name escaped (sqlite_util.text_path); the file is found by its real bytes
    from analyzer.library.web import audio_file

    raw, lib = _clicks_document_and_empty_folder(library, tmp_path)
    name = os.fsdecode(b"bad\xff\xfe name.mp3")
    shutil.copy(library["dir"] / "clicks.mp3", lib / name)
    store = open_library(lib)
    try:
        st = (lib / name).stat()
        tid = store.put_document(name, mtime_ns=st.st_mtime_ns, size=st.st_size, document=raw, doc=json.loads(raw))
        found = audio_file(store, tid)
        assert found is not None and os.fsencode(found[0].name) == b"bad\xff\xfe name.mp3"
    finally:
        store.close()


def test_the_page_needs_a_login_and_the_login_is_a_strict_httponly_cookie(server, library):
    import httpx

    from analyzer.library.web import COOKIE, make_session, valid_session

    # no login: the login form, and nothing of the library
    r = httpx.get(server.base + "/")
    assert r.status_code == 401 and 'action="/login"' in r.text and library["demo"] not in r.text
    for path in ("/v1/library/tracks", f"/v1/tracks/{library['demo']}/audio", "/v1/library/status"):
        assert httpx.get(server.base + path).status_code == 401, path
    assert httpx.get(server.base + "/static/app.js").status_code == 200  # the page's code holds no data
    forged = httpx.get(server.base + "/v1/library/tracks", cookies={COOKIE: "9999999999." + "0" * 64})
    assert forged.status_code == 401
    assert httpx.post(server.base + "/login", data={"token": "wrong"}).status_code == 401
    # the login
    ok = httpx.post(server.base + "/login", data={"token": TOKEN})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
        "SameSite=Strict", "SameSite=strict")
    with httpx.Client(base_url=server.base, cookies=ok.cookies) as browser:
        page = browser.get("/")
        assert page.status_code == 200 and 'src="/static/app.js"' in page.text and 'action="/logout"' in page.text
        listed = browser.get("/v1/library/tracks").json()
        assert {t["id"] for t in listed["items"]} >= {library["demo"], library["clicks"]}
        clicks = next(t for t in listed["items"] if t["id"] == library["clicks"])
        assert clicks["tempo"] == pytest.approx(120, rel=0.04) and clicks["artist"] == synth.TAGS["artist"]
        assert browser.get(f"/v1/tracks/{library['demo']}/audio", headers={"Range": "bytes=0-9"}).status_code == 206
        out = browser.post("/logout")
        assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
    # the JSON API still takes the bearer token; a session expires and is bound to the token
    assert server.get("/v1/library/tracks").status_code == 200
    assert valid_session(TOKEN, make_session(TOKEN)) and not valid_session("another", make_session(TOKEN))
    assert not valid_session(TOKEN, make_session(TOKEN, now_s=0))


# --- the server's life ------------------------------------------------------------------------------

def test_a_file_added_while_serving_appears_without_a_restart(server, library, tmp_path):
    before = server.status()["analysed"]
    new = _clicks(tmp_path / "late.wav", bpm=100, seconds=12)
    shutil.copy(new, library["dir"] / ".late.part")
    os.replace(library["dir"] / ".late.part", library["dir"] / "late.wav")  # hidden while it is copied
    status = _wait(lambda: (s := server.status())["analysed"] > before and s, 120, "the new file's analysis",
                   interval_s=0.5)
    assert status["pending"] == 0 and status["failed"] == 0
    tid = server.get("/v1/library/lookup", params={"path": "late.wav"}).json()["id"]
    assert server.get(f"/v1/audio-features/{tid}").json()["tempo"] == pytest.approx(100, rel=0.04)


def test_killing_the_server_mid_analysis_loses_nothing(tmp_path, new_db):
    lib = tmp_path / "lib"
    lib.mkdir()
    for bpm in (90, 110, 130, 150):
        _clicks(lib / f"clicks_{bpm}.wav", bpm=bpm, seconds=20)
    old = time.time() - 60
    for f in lib.iterdir():
        os.utime(f, (old, old))  # settled: taken on the first pass
    s = Server(lib, token=None, db=new_db)
    try:
        _wait(lambda: s.status()["analysed"] >= 1, 120, "the first document", interval_s=0.05)
    finally:
        s.stop(signal.SIGKILL)
    store = open_library(lib, new_db)
    kept = {p: f.track_id for p, f in store.files().items() if f.track_id}
    etags = {tid: store.document(tid)[1] for tid in kept.values()}
    store.close()
    assert kept
    s = Server(lib, token=None, db=new_db)
    try:
        status = _wait(lambda: (st := s.status())["analysed"] == 4 and st, 180, "all four documents", interval_s=0.5)
    finally:
        s.stop()
    assert status["failed"] == 0
    store = open_library(lib, new_db)
    # the documents stored before the kill were not made again
    assert {tid: store.document(tid)[1] for tid in kept.values()} == etags
    assert len({f.track_id for f in store.files().values()}) == 4
    store.close()


def test_a_public_address_without_a_token_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANALYZE_TOKEN"}
    proc = subprocess.run([*SERVE, str(tmp_path), "--host", "0.0.0.0"], capture_output=True, timeout=60, cwd=ROOT,
                          env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("error: ") and "--token" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
    proc = subprocess.run([*SERVE, str(tmp_path / "missing")], capture_output=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 1 and "not a folder" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


# --- PostgreSQL -----------------------------------------------------------------------------------------

def test_postgresql_holds_the_same_schema_and_answers_the_same(pg_cluster, analysed, tmp_path):
    postgres_url, library = pg_cluster.database(), analysed
    sqlite_store = open_library(library["dir"])
    raw, _ = sqlite_store.document(library["clicks"])
    state = sqlite_store.files()["clicks.mp3"]
    sqlite_store.close()
    store = LibraryStore(postgres_url, library["dir"])
    try:
        assert store.kind == "postgresql" and store.schema_version() == len(MIGRATIONS)
        tid = store.put_document("clicks.mp3", mtime_ns=state.mtime_ns, size=state.size, document=raw,
                                 doc=json.loads(raw))
        assert tid == library["clicks"] and store.document(tid)[0] == raw
        rows, total = store.search("ENSEMBLE", limit=10, offset=0)
        assert total == 1 and rows[0].name == synth.TAGS["title"]
        assert store.lookup("clicks.mp3") == tid
        store.remove_files(["clicks.mp3"])
        assert store.counts() == {"files": 0, "analysed": 0, "failed": 0, "unavailable": 0, "tracks": 0}
    finally:
        store.close()
    LibraryStore(postgres_url, library["dir"]).close()  # opened again: already at the latest version


def test_postgresql_schema_is_migrated_in_order_and_foreign_databases_refused(pg_cluster, tmp_path):
    import psycopg

    def sql(url, *statements):
        with psycopg.connect(url, autocommit=True) as conn:
            cursors = [conn.execute(st) for st in statements]
            return [c.fetchall() if st.startswith("SELECT") else None for c, st in zip(cursors, statements)]

    older = pg_cluster.database()  # an older database (no step applied yet) is brought up to date
    sql(older, "CREATE TABLE schema_version (version INTEGER NOT NULL)", "INSERT INTO schema_version VALUES (0)")
    store = LibraryStore(older, tmp_path)
    assert store.schema_version() == len(MIGRATIONS) and store.counts()["files"] == 0
    store.close()
    assert sql(older, "SELECT version FROM schema_version")[0] == [(len(MIGRATIONS),)]
    sql(older, "UPDATE schema_version SET version = 99")  # a newer one is refused untouched
    with pytest.raises(InputError, match="newer analyze"):
        LibraryStore(older, tmp_path)
    assert sql(older, "SELECT version FROM schema_version")[0] == [(99,)]
    other = pg_cluster.database()
    sql(other, "CREATE TABLE songs (x TEXT)")
    with pytest.raises(InputError, match="another program's database"):
        LibraryStore(other, tmp_path)
    with pytest.raises(InputError, match="cannot connect to PostgreSQL"):
        LibraryStore(pg_cluster.url + "/no_such_database", tmp_path)


def test_the_readme_lists_every_endpoint():
    from analyzer.library.serve import build_app

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Serving a library"):text.index("### From Python")]
    paths = {r.path.rstrip("/") for r in build_app(None).routes}  # listing routes needs no store
    missing = [p for p in paths if f"`GET {p}" not in section]
    assert not missing, missing
