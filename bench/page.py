"""The page of `analyze serve` as a person meets it: load time and time to first sound on a 4-minute song.

    python -m bench.page [--runs 5] [--json bench/page.json]

Makes a 4-minute song (the demo song looped, 240 s of Ogg Vorbis; ``bench/.cache/page/``, never
committed), starts ``analyze serve`` on a folder holding it, waits for the analysis, then drives Debian's
chromium headless (Selenium, the system chromedriver; the flags of tests/test_page.py) against it,
``--runs`` times each, a fresh navigation every time:

* **library page**: from the navigation's start to the list of tracks shown (``library-shown`` mark);
* **track page**: to the analysis drawn (``track-drawn``) and to the first sound of the ``<audio>``
  element started by the page (``first-sound``: its ``playing`` event);
* **jukebox**: to the first beat the endless jukebox plays (``jukebox-first-beat``): the whole file is
  fetched and decoded for Web Audio first.

Medians and the range, in milliseconds, from the page's own performance marks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .run import REPO_ROOT, machine_text
from .truth import bench_cache_dir

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000", "--mute-audio"]
SONG_S = 240


def song(cache: Path) -> Path:
    path = cache / "song-240s.ogg"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        demo = REPO_ROOT / "fixtures" / "demo" / "demo.ogg"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(demo), "-t", str(SONG_S),
                        "-c:a", "libvorbis", "-q:a", "5", str(path)], check=True)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict | None:
    import httpx

    try:
        return httpx.get(url, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    lib = Path(tempfile.mkdtemp(prefix="bench-page-"))
    shutil.copy(song(bench_cache_dir() / "page"), lib / "song.ogg")
    old = time.time() - 60
    os.utime(lib / "song.ogg", (old, old))
    port = _port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-c", "from analyzer.cli import main; main()", "serve", str(lib),
                               "--port", str(port), "--poll", "0.5"], cwd=REPO_ROOT)
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    driver = None
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    try:
        t0 = time.perf_counter()
        while not ((s := _get(base + "/v1/library/status")) and s["analysed"] == 1):
            if server.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("the server stopped or did not analyse the song in 10 minutes")
            time.sleep(0.5)
        analysis_s = time.perf_counter() - t0
        tid = _get(base + "/v1/library/lookup?path=song.ogg")["id"]
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for f in FLAGS:
            opts.add_argument(f)
        opts.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))

        def mark(name: str, timeout_s: float = 60) -> float:
            t = time.perf_counter()
            while time.perf_counter() - t < timeout_s:
                got = driver.execute_script(
                    "const m = performance.getEntriesByName(arguments[0]); return m.length ? m[0].startTime : null;",
                    name)
                if got is not None:
                    return float(got)
                time.sleep(0.02)
            raise SystemExit(f"no {name} mark in {timeout_s} s")

        times: dict[str, list[float]] = {"library_shown_ms": [], "track_drawn_ms": [], "first_sound_ms": [],
                                         "jukebox_first_beat_ms": []}
        for _ in range(args.runs):
            driver.get("about:blank")
            driver.get(base + "/")
            times["library_shown_ms"].append(mark("library-shown"))
            driver.get("about:blank")
            driver.get(base + f"/#/track/{tid}?play")
            times["track_drawn_ms"].append(mark("track-drawn"))
            times["first_sound_ms"].append(mark("first-sound"))
            driver.get("about:blank")
            driver.get(base + f"/#/jukebox/{tid}?play")
            times["jukebox_first_beat_ms"].append(mark("jukebox-first-beat"))
        result = {"song_seconds": SONG_S, "song_bytes": (lib / "song.ogg").stat().st_size, "runs": args.runs,
                  "server_analysis_s": round(analysis_s, 1), "machine": machine_text(),
                  "chromium": subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True,
                                             text=True).stdout.strip(),
                  **{k: {"median": round(statistics.median(v), 1), "min": round(min(v), 1), "max": round(max(v), 1)}
                     for k, v in times.items()}}
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
        shutil.rmtree(lib, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
