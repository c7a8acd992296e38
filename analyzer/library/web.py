"""The page `analyze serve` shows at ``/``, and what it needs beside the Spotify-shaped API.

    GET /                        the page (the library, a track, the endless jukebox)
    GET /static/{name}           its script and style, shipped with the package (analyzer/library/page/)
    GET /v1/tracks/{id}/audio    the track's file: Range requests, ETag and Last-Modified
    GET /v1/library/tracks       every track with the audio features the page's list shows
    POST /login, POST /logout    with a token: the browser's way in, an HttpOnly SameSite=Strict cookie

An ``<audio>`` element cannot send an ``Authorization`` header, so with ``--token`` the browser
logs in once with the token and gets a session cookie (HttpOnly: scripts cannot read it;
SameSite=Strict: other sites cannot make the browser send it).  The cookie is an expiry time and
its HMAC under a key derived from the token: nothing is kept on the server, and a new token ends
every session.  The JSON API keeps taking the bearer token.  Without the cookie, ``/`` answers a
login form and nothing of the library.  Wrong tokens, at the form or as a bearer, are counted
together (`Guesses`): after 10 in a minute every new token is refused with 429 and Retry-After
until the oldest leaves the minute; a logged-in browser goes on.

Audio is served only for files the library holds, found through the track id (never from a path
the request gives), and only where the file, its links resolved, is inside the library folder.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

import orjson

from analyzer.document import audio_features_object
from analyzer.library.sqlite_util import os_path
from analyzer.library.store import LibraryStore

COOKIE = "analyze_session"
SESSION_S = 12 * 3600  # a login lasts this long
# wrong tokens tolerated in a sliding window before every new token is refused (429) until the oldest
# leaves it: a person mistyping never meets it; a guessing loop gets 10 tries a minute instead of
# thousands a second (the server listens on the loopback, so whoever guesses runs on this machine)
LOGIN_MAX_FAILURES = 10
LOGIN_WINDOW_S = 60.0


class Guesses:
    """Wrong tokens seen lately, shared by the login form and the bearer check (one server process).

    Parameters
    ----------
    max_failures : int
        Wrong tokens tolerated within ``window_s``; at that many, every token is refused until the
        oldest failure leaves the window.
    window_s : float
        The sliding window, seconds.
    clock : callable
        Seconds, monotonic (tests pass their own).
    """

    def __init__(self, *, max_failures: int = LOGIN_MAX_FAILURES, window_s: float = LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: list[float] = []  # oldest first

    def wait_s(self) -> float:
        """Seconds until a token may be tried again; 0 now."""
        now = self.clock()
        self._failures = [t for t in self._failures if now - t < self.window_s]
        if len(self._failures) < self.max_failures:
            return 0.0
        return self._failures[0] + self.window_s - now

    def failed(self) -> None:
        """One more wrong token."""
        self._failures.append(self.clock())


def retry_after(wait_s: float) -> str:
    """The Retry-After header's whole seconds (at least 1)."""
    return str(max(1, int(wait_s + 0.999)))


# set in the scope of a request the login cookie stood for: its token was checked as the cookie's HMAC
SESSION_SCOPE_KEY = "analyze.session"
CHUNK_BYTES = 256 * 1024
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
AUDIO_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".oga": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4", ".aac": "audio/aac",
               ".mp4": "audio/mp4", ".aif": "audio/aiff", ".aiff": "audio/aiff", ".wma": "audio/x-ms-wma",
               ".webm": "audio/webm", ".mka": "audio/x-matroska"}
_STATIC_NAME = re.compile(r"[a-z0-9_-]+\.(js|css|svg|png)")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


# --- the page's files ---------------------------------------------------------------------------

def static_file(name: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of one of the page's files (analyzer/library/page/NAME), or None."""
    if name != "index.html" and not _STATIC_NAME.fullmatch(name):
        return None
    f = resources.files("analyzer.library").joinpath("page", name)
    if not f.is_file():
        return None
    return f.read_bytes(), STATIC_TYPES[Path(name).suffix]


def _static_response(name: str) -> tuple[bytes, str, dict[str, str]] | None:
    """(body, content type, headers) of one of the page's files, or None."""
    found = static_file(name)
    if found is None:
        return None
    body, kind = found
    etag = '"' + hashlib.md5(body).hexdigest() + '"'
    # no-cache: revalidated each time (a new version of the package shows at once), 304 when unchanged
    return body, kind, {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>analyze serve: log in</title><link rel="stylesheet" href="/static/style.css"></head>
<body class="login"><main>
<h1>Your library</h1>
<p>This server asks for its token (the one given to <code>analyze serve --token</code>).</p>
<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
{message}
</main></body></html>
"""


# --- sessions -------------------------------------------------------------------------------------

def _session_key(token: str) -> bytes:
    return hashlib.sha256(b"analyze-session\0" + token.encode()).digest()


def make_session(token: str, *, now_s: float | None = None) -> str:
    """A session cookie's value for `token`: its expiry (Unix seconds) and an HMAC of it."""
    expiry = int((time.time() if now_s is None else now_s) + SESSION_S)
    mac = hmac.new(_session_key(token), str(expiry).encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def valid_session(token: str, value: str, *, now_s: float | None = None) -> bool:
    """Whether a cookie's value was made by `make_session` with this token and has not expired."""
    expiry, _, mac = value.partition(".")
    if not expiry.isdigit() or len(mac) != 64:
        return False
    want = hmac.new(_session_key(token), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, want) and int(expiry) > (time.time() if now_s is None else now_s)


def _cookies(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                out.setdefault(k, v)
    return out


class Session:
    """ASGI middleware, outside the bearer check: the browser's login, and its cookie as the token.

    With no token it passes everything on.  With one: ``POST /login`` checks the form's token
    and sets the cookie; ``POST /logout`` clears it; a request with a valid cookie goes on as if
    it carried the bearer token; without one, ``/`` answers the login form (401) and the page's
    static files are served (they hold no data); everything else meets the bearer check.
    """

    def __init__(self, app, token: str | None, guesses: Guesses | None = None) -> None:
        self.app = app
        self.token = token
        self.guesses = guesses or Guesses()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import RedirectResponse, Response

        path, method = scope["path"], scope["method"]
        if path == "/login" and method == "POST":
            wait_s = self.guesses.wait_s()
            if wait_s > 0:
                # every token waits, the right one too: a guess must not learn that it was right
                r = Response(LOGIN_PAGE.format(message='<p class="error" role="alert">Too many wrong tokens: '
                                                       f'try again in {retry_after(wait_s)} s.</p>'),
                             status_code=429, media_type="text/html", headers={"Retry-After": retry_after(wait_s)})
                await r(scope, receive, send)
                return
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if len(body) > 8192:
                    break
                if not msg.get("more_body"):
                    break
            given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                r = RedirectResponse("/", status_code=303)
                r.set_cookie(COOKIE, make_session(self.token), max_age=SESSION_S, path="/", httponly=True,
                             samesite="strict")
            else:
                self.guesses.failed()
                r = Response(LOGIN_PAGE.format(message='<p class="error" role="alert">That is not the token.</p>'),
                             status_code=401, media_type="text/html")
            await r(scope, receive, send)
            return
        if path == "/logout" and method == "POST":
            r = RedirectResponse("/", status_code=303)
            r.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
            await r(scope, receive, send)
            return
        has_bearer = any(k == b"authorization" for k, _ in scope["headers"])
        cookie = _cookies(scope).get(COOKIE)
        if not has_bearer and cookie and valid_session(self.token, cookie):
            scope = dict(scope)
            scope["headers"] = [*scope["headers"], (b"authorization", b"Bearer " + self.token.encode())]
            scope[SESSION_SCOPE_KEY] = True  # a session already proved the token: no guess to throttle
            await self.app(scope, receive, send)
            return
        if not has_bearer and method in ("GET", "HEAD"):
            if path == "/":
                r = Response(LOGIN_PAGE.format(message=""), status_code=401, media_type="text/html",
                             headers={"Cache-Control": "no-store"})
                await r(scope, receive, send)
                return
            if path.startswith("/static/"):
                found = _static_response(path.removeprefix("/static/"))
                r = Response(found[0], media_type=found[1], headers=found[2]) if found else \
                    Response(b"not found", status_code=404, media_type="text/plain")
                await r(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --- audio ----------------------------------------------------------------------------------------

def audio_file(store: LibraryStore, tid: str) -> tuple[Path, os.stat_result] | None:
    """The file that holds track `tid` and its stat, or None when no file of the library holds it.

    Only a path the database gives for the id is looked at, and only where it resolves (links
    followed) to a regular file inside the library folder.
    """
    found = store.tracks([tid])
    if tid not in found or not found[tid].path:
        return None
    # the database keeps names that are not UTF-8 in their escaped text form (sqlite_util.text_path)
    name = os_path(found[tid].path)
    if name is None:
        return None
    root = os.path.realpath(store.root)
    full = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        return None
    try:
        st = os.stat(full)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Path(full), st


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """The byte range (first, last inclusive) a ``Range`` header asks of a `size`-byte file.

    Returns
    -------
    (int, int), None or "unsatisfiable"
        None: no usable single range (absent, malformed, another unit or several ranges: the
        whole file is sent, as RFC 9110 allows); "unsatisfiable": a range wholly past the end.
    """
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None
    if first >= size:
        return "unsatisfiable"
    last = int(m[2]) if m[2] else size - 1
    return first, min(last, size - 1)


def _read(path: Path, first: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(first)
        while length > 0:
            chunk = f.read(min(CHUNK_BYTES, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _not_modified(request, etag: str, mtime_s: int) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        return inm.strip() == "*" or etag in [w.strip().removeprefix("W/") for w in inm.split(",")]
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            return mtime_s <= email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


# --- the routes -----------------------------------------------------------------------------------

def routes(store: LibraryStore | None, *, check_id: Callable[[str], None], login: bool = False) -> list:
    """The page's routes, for `serve.build_app` (`check_id` raises its 400 for a malformed id; `login`:
    the server has a token, so the page shows a way to log out)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    features: dict[str, tuple[str, dict]] = {}  # track id -> (etag, the list's fields), read once per document

    def listed() -> list[dict]:
        rows = []
        etags = store.etags()  # one query, not one per track
        for t in store.all_tracks():
            etag = etags.get(t.id)
            hit = features.get(t.id)
            if hit is None or hit[0] != etag:
                found = store.document(t.id)
                if found is None:
                    continue
                f = audio_features_object(orjson.loads(found[0]), track_id=t.id)
                keep = {k: f.get(k) for k in ("tempo", "key", "mode", "time_signature", "loudness", "energy",
                                              "danceability", "valence")}
                hit = features[t.id] = (found[1], keep)
            rows.append({"id": t.id, "name": t.name, "artist": t.artist, "album": t.album,
                         "duration_ms": t.duration_ms, "path": t.path, **hit[1]})
        for gone in set(features) - {r["id"] for r in rows}:
            features.pop(gone, None)
        return rows

    async def page(request: Request) -> Response:
        found = _static_response("index.html")
        body = found[0].replace(b'<form id="logout" method="post" action="/logout" hidden>',
                                b'<form id="logout" method="post" action="/logout">') if login else found[0]
        return Response(body, media_type=found[1], headers={**found[2], "Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        found = _static_response(request.path_params["name"])
        if found is None:
            raise HTTPException(404, f"no file {request.path_params['name'][:60]!r}")
        if request.headers.get("if-none-match") == found[2]["ETag"]:
            return Response(status_code=304, headers=found[2])
        return Response(found[0], media_type=found[1], headers=found[2])

    async def library_tracks(request: Request) -> Response:
        rows = await run_in_threadpool(listed)
        return Response(orjson.dumps({"items": rows, "total": len(rows)}), media_type="application/json")

    async def audio(request: Request) -> Response:
        tid = request.path_params["id"]
        check_id(tid)
        found = await run_in_threadpool(audio_file, store, tid)
        if found is None:
            raise HTTPException(404, f"no file of the library holds track {tid}")
        path, st = found
        size, mtime_s = st.st_size, int(st.st_mtime)
        etag = '"' + hashlib.md5(f"{tid}:{st.st_mtime_ns}:{size}".encode()).hexdigest() + '"'
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": email.utils.formatdate(mtime_s, usegmt=True),
                   "Cache-Control": "private, no-cache"}
        if _not_modified(request, etag, mtime_s):
            return Response(status_code=304, headers=headers)
        kind = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted and if_range and if_range.strip() != etag and if_range.strip() != headers["Last-Modified"]:
            wanted = None  # the file changed since the client's first part: send it whole
        rng = parse_range(wanted, size) if wanted else None
        if rng == "unsatisfiable":
            return Response(orjson.dumps({"error": {"status": 416, "message": f"range {wanted[:60]!r} is past the "
                                                    f"end of the {size}-byte file"}}),
                            status_code=416, media_type="application/json",
                            headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        first, last, status = (0, size - 1, 200) if rng is None else (rng[0], rng[1], 206)
        length = max(0, last - first + 1)
        headers["Content-Length"] = str(length)
        if status == 206:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        if request.method == "HEAD":
            return Response(b"", status_code=status, media_type=kind, headers=headers)
        return StreamingResponse(_read(path, first, length), status_code=status, media_type=kind, headers=headers)

    return [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/v1/tracks/{id}/audio", audio, methods=["GET", "HEAD"]),
        Route("/v1/library/tracks", library_tracks),
    ]
