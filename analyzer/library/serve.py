"""A local Web API in the shape of Spotify's, over a `library.LibraryStore`.

    GET /v1/audio-analysis/{id}          the stored document as it is (ETag, If-None-Match -> 304)
    GET /v1/audio-features/{id}          Spotify's audio-features object
    GET /v1/audio-features?ids=a,b       {"audio_features": [object or null, ...]}
    GET /v1/tracks/{id}, /v1/tracks?ids= name, artists, album, duration_ms from the file's tags
    GET /v1/search?q=&type=track         Spotify's paging object over tags and paths
    GET /v1/recommendations?seed_tracks= from a `recommend` model, where one is given
    GET /v1/library/status               the indexer's progress
    GET /v1/library/lookup?path=         a file's track id

and, for a person with a browser (`web`): the page at /, GET /v1/tracks/{id}/audio (Range requests),
GET /v1/library/tracks, and with a token a login that sets a cookie.

Errors are Spotify's ``{"error": {"status": ..., "message": ...}}``.  Requests beyond
`concurrency` wait for a turn (none is refused); responses are gzipped for clients that accept
it (documents are kept compressed in a small cache).
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import hashlib
import hmac
import ipaddress
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import orjson

from analyzer.document import audio_features_object
from analyzer.library import web
from analyzer.library.store import ID_LENGTH, MAX_SEARCH_WORDS, Indexer, LibraryStore, TrackInfo
from analyzer.library.sqlite_util import os_path, text_path

_ID = re.compile(rf"[0-9A-Za-z]{{{ID_LENGTH}}}")
# uri "spotify:track:ID": the ids are not Spotify's, but clients parse only this scheme (spotipy refuses
# "local:track:ID"), and code that passes a result's uri back to this server must keep working
URI_SCHEME = "spotify"
MAX_IDS = 100  # Spotify's limit for ?ids=
RECOMMEND_POOL = 1000  # items asked of the model for /v1/recommendations, before keeping the library's

# seed keys of each seed track -> recommended item keys, best first (see `recommender.serving`)
Recommend = Callable[[list[list[str]], int], list[str]]


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether `host` only takes connections from this machine ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def audio_features(doc: dict, *, track_id: str, base_url: str) -> dict:
    """Spotify's audio-features object of one document.

    Tempo, key, mode, loudness, time signature and duration come from ``track``; the perceptual
    fields from the document's ``audio_features`` extension where it has one, null otherwise.

    Parameters
    ----------
    doc : dict
        An analysis document.
    track_id : str
        Its library id.
    base_url : str
        The server's root ("http://127.0.0.1:8800"), for ``analysis_url`` and ``track_href``.

    Returns
    -------
    dict
        Fields in Spotify's alphabetical order.
    """
    out = audio_features_object(doc, track_id=track_id)
    out.update(analysis_url=f"{base_url}/v1/audio-analysis/{track_id}", track_href=f"{base_url}/v1/tracks/{track_id}",
               uri=f"{URI_SCHEME}:track:{track_id}")
    return out


def track_object(t: TrackInfo, *, base_url: str) -> dict:
    """Spotify's track object from a track's tags (the file name where it has no title)."""
    artists = [{"name": t.artist, "type": "artist", "id": None, "uri": None, "href": None, "external_urls": {}}] \
        if t.artist else []
    return {
        "album": {"name": t.album, "type": "album", "album_type": "album", "artists": artists, "id": None,
                  "images": [], "uri": None, "href": None, "external_urls": {}},
        "artists": artists,
        "disc_number": 1,
        "duration_ms": t.duration_ms,
        "explicit": False,
        "external_urls": {},
        "href": f"{base_url}/v1/tracks/{t.id}",
        "id": t.id,
        "is_local": True,
        "name": t.name,
        "popularity": 0,
        "track_number": 0,
        "type": "track",
        "uri": f"{URI_SCHEME}:track:{t.id}",
    }


def seed_keys(t: TrackInfo) -> list[str]:
    """The names `recommend ingest` gives a document's item: the file name without extension
    (``--id path``) and "artist - title" (``--id title``)."""
    keys = [Path(t.path).stem] if t.path else []
    if t.artist or t.name:
        keys.append(f"{t.artist} - {t.name}")
    return keys


class _Docs:
    """A small LRU of documents: (etag, raw bytes, gzipped bytes) by track id."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._d: OrderedDict[str, tuple[str, bytes, bytes]] = OrderedDict()

    def get(self, store: LibraryStore, tid: str) -> tuple[str, bytes, bytes] | None:
        etag = store.etag(tid)  # a cheap check that the cached one is (still) the stored one
        if etag is None:
            self._d.pop(tid, None)
            return None
        hit = self._d.get(tid)
        if hit is not None and hit[0] == etag:
            self._d.move_to_end(tid)
            return hit
        found = store.document(tid)
        if found is None:
            return None
        raw, etag = found
        entry = (etag, raw, gzip.compress(raw, compresslevel=5))
        self._d[tid] = entry
        while len(self._d) > self.size:
            self._d.popitem(last=False)
        return entry


def build_app(store: LibraryStore, indexer: Indexer | None = None, *, token: str | None = None,
              recommend: Recommend | None = None, concurrency: int = 32,
              hosts: tuple[str, ...] | None = LOOPBACK_NAMES, guesses: web.Guesses | None = None):
    """The Starlette application.

    Parameters
    ----------
    store : LibraryStore
        Where documents are read.
    indexer : Indexer or None
        Its status is served at /v1/library/status (404 without one).
    token : str or None
        Require ``Authorization: Bearer <token>`` on every request.
    recommend : callable or None
        Seeds' item keys and a count -> recommended item keys (`recommender.serving.load`);
        /v1/recommendations answers 404 without one.
    concurrency : int
        Requests handled at once; more wait for a turn.
    hosts : tuple of str or None
        Without a `token`, the names a request's ``Host`` may give (the server's own: a page
        elsewhere that points its DNS name at 127.0.0.1 must not read the API); others get 421.
        None: any (the token guards the API).
    guesses : web.Guesses or None
        Where wrong tokens are counted (login form and bearer together); a new one by default
        (10 a minute, then 429 until the oldest leaves the minute).

    Returns
    -------
    starlette.applications.Starlette
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    docs = _Docs()

    def error(status: int, message: str, headers: dict | None = None) -> Response:
        return Response(orjson.dumps({"error": {"status": status, "message": message}}), status_code=status,
                        media_type="application/json", headers=headers)

    def json(obj, request: Request, *, etag: bool = False) -> Response:
        body = orjson.dumps(obj)
        if etag:
            tag = '"' + hashlib.md5(body).hexdigest() + '"'
            if _matches(request, tag):
                return Response(status_code=304, headers={"ETag": tag})
            return Response(body, media_type="application/json", headers={"ETag": tag})
        return Response(body, media_type="application/json")

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def check_id(tid: str) -> None:
        if not _ID.fullmatch(tid):
            raise HTTPException(400, f"invalid id {tid[:40]!r}: expected {ID_LENGTH} characters of [0-9A-Za-z]")

    def ids_param(request: Request) -> list[str]:
        raw = request.query_params.get("ids")
        if not raw:
            raise HTTPException(400, "give ids=ID,ID,...")
        ids = [i.strip() for i in raw.split(",") if i.strip()]
        if len(ids) > MAX_IDS:
            raise HTTPException(400, f"too many ids: {len(ids)} (at most {MAX_IDS})")
        for i in ids:
            check_id(i)
        return ids

    async def analysis(request: Request) -> Response:
        tid = request.path_params["id"]
        check_id(tid)
        entry = await run_in_threadpool(docs.get, store, tid)
        if entry is None:
            raise HTTPException(404, f"no track with id {tid}")
        etag, raw, gz = entry
        headers = {"ETag": etag, "Vary": "Accept-Encoding"}
        if _matches(request, etag):
            return Response(status_code=304, headers=headers)
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            return Response(gz, media_type="application/json", headers={**headers, "Content-Encoding": "gzip"})
        return Response(raw, media_type="application/json", headers=headers)

    def features_of(tid: str, root: str) -> dict | None:
        entry = docs.get(store, tid)
        return None if entry is None else audio_features(orjson.loads(entry[1]), track_id=tid, base_url=root)

    async def features_one(request: Request) -> Response:
        tid = request.path_params["id"]
        check_id(tid)
        obj = await run_in_threadpool(features_of, tid, base(request))
        if obj is None:
            raise HTTPException(404, f"no track with id {tid}")
        return json(obj, request, etag=True)

    async def features_many(request: Request) -> Response:
        ids = ids_param(request)
        root = base(request)
        objs = await run_in_threadpool(lambda: [features_of(i, root) for i in ids])
        return json({"audio_features": objs}, request)

    async def track_one(request: Request) -> Response:
        tid = request.path_params["id"]
        check_id(tid)
        found = await run_in_threadpool(store.tracks, [tid])
        if tid not in found:
            raise HTTPException(404, f"no track with id {tid}")
        return json(track_object(found[tid], base_url=base(request)), request, etag=True)

    async def track_many(request: Request) -> Response:
        ids = ids_param(request)
        found = await run_in_threadpool(store.tracks, ids)
        root = base(request)
        return json({"tracks": [track_object(found[i], base_url=root) if i in found else None for i in ids]}, request)

    async def search(request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        types = {t.strip() for t in request.query_params.get("type", "").split(",") if t.strip()}
        if not q:
            raise HTTPException(400, "give q=WORDS")
        if "track" not in types:
            raise HTTPException(400, "type must include track (this server has tracks only)")
        if len(set(q.lower().split())) > MAX_SEARCH_WORDS:
            raise HTTPException(400, f"q holds {len(set(q.lower().split()))} different words: at most "
                                     f"{MAX_SEARCH_WORDS}")
        limit = _int_param(request, "limit", 20, 0, 50)
        offset = _int_param(request, "offset", 0, 0, 1000)
        rows, total = await run_in_threadpool(lambda: store.search(q, limit=limit, offset=offset))
        root = base(request)

        def page(off: int) -> str:
            return str(request.url.include_query_params(offset=off, limit=limit)).replace(str(request.base_url), root + "/", 1)

        return json({"tracks": {
            "href": page(offset), "items": [track_object(t, base_url=root) for t in rows], "limit": limit,
            "next": page(offset + limit) if offset + limit < total else None,
            "offset": offset, "previous": page(max(0, offset - limit)) if offset > 0 else None, "total": total,
        }}, request)

    async def recommendations(request: Request) -> Response:
        if recommend is None:
            raise HTTPException(404, "no recommendation model: start the server with --model MODEL_FOLDER "
                                     "(a folder made by `recommend ingest` and `recommend fit`)")
        raw = request.query_params.get("seed_tracks", "")
        seeds = [s.strip() for s in raw.split(",") if s.strip()]
        if not 1 <= len(seeds) <= 5:
            raise HTTPException(400, "give 1 to 5 seed_tracks=ID,ID")
        for s in seeds:
            check_id(s)
        limit = _int_param(request, "limit", 20, 1, 100)
        return json(await run_in_threadpool(_recommend, store, recommend, seeds, limit, base(request)), request)

    async def status(request: Request) -> Response:
        if indexer is None:
            raise HTTPException(404, "this server has no indexer")
        return json(await run_in_threadpool(indexer.status), request)

    async def lookup(request: Request) -> Response:
        path = _raw_param(request, "path")
        if not path:
            raise HTTPException(400, "give path=FILE (relative to the library folder, or absolute inside it)")
        rel = _relative(store.root, path)
        if rel is None:
            raise HTTPException(400, f"{text_path(path)!r} is not inside the library folder")

        def find() -> tuple[str | None, str]:
            # the name itself, or its text as status and track objects show it (a name that is not UTF-8)
            for name in dict.fromkeys((rel, os_path(rel))):
                if name is not None and (tid := store.lookup(name)) is not None:
                    return tid, name
            return None, rel

        tid, rel = await run_in_threadpool(find)
        if tid is None:
            raise HTTPException(404, f"no analysed file {text_path(rel)!r} "
                                     "(see /v1/library/status: it may be pending or failed)")
        return json({"id": tid, "path": text_path(rel), "uri": f"{URI_SCHEME}:track:{tid}"}, request)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, exc.detail if isinstance(exc.detail, str) else str(exc.detail), exc.headers)

    async def internal_error(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}: {exc}"[:300])

    routes = [
        Route("/v1/audio-analysis/{id}", analysis),
        Route("/v1/audio-features/{id}", features_one),
        Route("/v1/audio-features", features_many),
        Route("/v1/audio-features/", features_many),  # spotipy asks audio-features/?ids=
        Route("/v1/tracks/{id}", track_one),
        Route("/v1/tracks", track_many),
        Route("/v1/tracks/", track_many),
        Route("/v1/search", search),
        Route("/v1/recommendations", recommendations),
        Route("/v1/library/status", status),
        Route("/v1/library/lookup", lookup),
        # the page at /, its files, the audio, the page's list
        *web.routes(store, check_id=check_id, login=token is not None),
    ]
    guesses = guesses or web.Guesses()
    middleware = [
        Middleware(_Limit, limit=concurrency),
        Middleware(_Hosts, hosts=None if token else hosts, error=error),
        Middleware(web.Session, token=token, guesses=guesses),  # the login cookie stands for the bearer token
        Middleware(_Auth, token=token, error=error, guesses=guesses),
        Middleware(_Gzip, minimum_size=1000),
    ]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})


def _matches(request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return wanted.strip() == "*" or etag in [w.strip().removeprefix("W/") for w in wanted.split(",")]


def _raw_param(request, name: str) -> str:
    """A query parameter with its percent-escaped bytes kept as they are (a file name need not be UTF-8:
    its bytes come back as `os.fsdecode` gives them)."""
    from urllib.parse import parse_qsl

    query = request.scope.get("query_string", b"").decode("latin-1")  # as Starlette reads it
    for key, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"):
        if key == name:
            return value
    return ""


def _int_param(request, name: str, default: int, lo: int, hi: int) -> int:
    from starlette.exceptions import HTTPException

    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise HTTPException(400, f"{name} must be within {lo}..{hi}, got {value}")
    return value


def _relative(root: Path, path: str) -> str | None:
    """`path` (relative to `root`, or absolute) as the library stores it, or None if outside `root`."""

    full = Path(os.path.normpath(os.path.join(os.path.abspath(root), path)))
    try:
        return full.relative_to(os.path.normpath(os.path.abspath(root))).as_posix()
    except ValueError:
        return None


def _recommend(store: LibraryStore, recommend: Recommend, seeds: list[str], limit: int, root: str) -> dict:
    from starlette.exceptions import HTTPException

    found = store.tracks(seeds)
    missing = [s for s in seeds if s not in found]
    if missing:
        raise HTTPException(404, f"no track with id {missing[0]}")
    by_key: dict[str, str] = {}
    tracks = {t.id: t for t in store.all_tracks()}
    for t in tracks.values():
        for k in seed_keys(t):
            by_key.setdefault(k, t.id)
    # a wide pool: the model knows many items the library does not hold, and those are dropped below
    keys = recommend([seed_keys(found[s]) for s in seeds], max(limit + len(seeds), RECOMMEND_POOL))
    picked: list[str] = []
    for k in keys:
        tid = by_key.get(k)
        if tid is not None and tid not in seeds and tid not in picked:
            picked.append(tid)
    picked = picked[:limit]
    return {
        "seeds": [{"id": s, "type": "TRACK", "href": f"{root}/v1/tracks/{s}", "initialPoolSize": len(keys),
                   "afterFilteringSize": len(picked), "afterRelinkingSize": len(picked)} for s in seeds],
        "tracks": [track_object(tracks[t], base_url=root) for t in picked],
    }


class _Limit:
    """At most `limit` requests in the application at once; the rest wait their turn."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._sem: asyncio.Semaphore | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        async with self._sem:
            await self.app(scope, receive, send)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip: named with a q above 0, or ``*`` with one."""
    q_of: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            q_of[coding.lower()] = q
    q = q_of.get("gzip", q_of.get("x-gzip", q_of.get("*", 0.0)))
    return q > 0


def _host_name(value: str) -> str:
    """The name in a Host header, without the port ("[::1]:8800" -> "::1")."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Hosts:
    """Answer only requests whose Host names this server (DNS rebinding), when `hosts` is set."""

    def __init__(self, app, hosts: tuple[str, ...] | None, error) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.strip("[]").lower() for h in hosts}
        self.error = error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.hosts is None:
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if _host_name(host) in self.hosts:
            await self.app(scope, receive, send)
            return
        shown = host[:60] or "(none)"
        await self.error(421, f"this server answers as {', '.join(sorted(self.hosts))}, not as host {shown!r}"
                         )(scope, receive, send)


class _Gzip:
    """Starlette's gzip for responses of 1000 bytes or more, for clients whose Accept-Encoding takes it
    (``gzip;q=0`` refuses it)."""

    def __init__(self, app, minimum_size: int) -> None:
        from starlette.middleware.gzip import GZipMiddleware

        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and accepts_gzip(dict(scope["headers"]).get(b"accept-encoding", b"").decode("latin-1")):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Auth:
    """``Authorization: Bearer <token>`` on every request, when a token is set; wrong ones count as guesses."""

    def __init__(self, app, token: str | None, error, guesses: web.Guesses) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.error = error
        self.guesses = guesses

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        got = dict(scope["headers"]).get(b"authorization", b"")
        checked = scope.get(web.SESSION_SCOPE_KEY, False)
        if got and not checked and (wait_s := self.guesses.wait_s()) > 0:
            # every token waits, the right one too: a guess must not learn that it was right
            await self.error(429, "Too many wrong tokens; try again later",
                             {"Retry-After": web.retry_after(wait_s)})(scope, receive, send)
            return
        scheme, _, value = got.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token):
            await self.app(scope, receive, send)
            return
        if got and not checked:
            self.guesses.failed()
        message = "No token provided" if not got else "Invalid access token"
        await self.error(401, message, {"WWW-Authenticate": 'Bearer realm="analyze"'})(scope, receive, send)


def listen(host: str, port: int):
    """The listening socket for `host`:`port`, bound now, so that a port in use is known before the
    server says it serves.

    Raises
    ------
    InputError
        The port is in use, the address is not this machine's, or the name does not resolve.
    """
    import socket

    from analyzer.errors import InputError

    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        # IPv4 unless the address is IPv6 (as uvicorn binds: "localhost" is 127.0.0.1)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host!r}: not an address of this machine ({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"{where}: the port is in use (another server?); give another --port") from None
        raise InputError(f"{where}: cannot listen there ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def serve(app, *, sock) -> None:
    """Run `app` with uvicorn on a socket from `listen` until SIGINT or SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
