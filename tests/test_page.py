"""The page at `/` of `analyze serve`, in a real browser: Debian's chromium, headless, driven by Selenium
through the system chromedriver (nothing downloads a browser or a driver).

One server (`analyze serve --token ... --model ...`) on a small library analysed once: the demo song,
a 15 s click track in 4/4 (repeated bars: the jukebox finds branches in it) and a waltz click track.
The model is a real `recommend` model fitted on a small world of listeners built here, whose items are
named as `recommend ingest --id path` names the library's files.  Screenshots of the three views
(page-library.png, page-track.png, page-jukebox.png) go to a temporary folder, or to the folder
ANALYZE_SCREENSHOTS names (``ANALYZE_SCREENSHOTS=bench`` renews the README's).

Bounded waits only: nothing here asserts how fast anything is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analyzer.library.store import Indexer, open_library
from fixtures import synth

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "demo" / "demo.ogg"
TOKEN = "page-token"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000", "--mute-audio"]

sys.path.insert(0, str(Path(__file__).parent))
from test_serve import Server, _wait  # noqa: E402


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the page's browser tests (.ci/install installs them)", pytrace=False)
    pytest.skip(reason)


def _recommend(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from recommender.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("page_library")
    shutil.copy(DEMO, lib / "demo.ogg")
    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=15)
    synth.encode(lib / "clicks.ogg", x, sr, metadata=synth.TAGS)
    x, sr, _ = synth.click_track(bpm=100, beats_per_bar=3, seconds=10, seed=3)
    synth.encode(lib / "waltz.ogg", x, sr)
    store = open_library(lib)
    assert Indexer(store, settle_s=0).run_pass() == 3
    ids = {name: store.lookup(f"{name}.ogg") for name in ("demo", "clicks", "waltz")}
    store.close()
    return {"dir": lib, **ids}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A `recommend` model fitted on listeners in three taste groups: the library's demo and waltz are
    liked by the same group, clicks by another (items named by file name, as `--id path` names them)."""
    from _worlds import taste_groups

    plays, genre = taste_groups(np.random.default_rng(11), n_users=60, n_items=60, n_cold=0)
    names = [f"song{i:02d}" for i in range(60)]
    names[0], names[3], names[1] = "demo", "waltz", "clicks"  # genres 0, 0 and 1
    assert genre[0] == genre[3] != genre[1]
    d = tmp_path_factory.mktemp("listeners")
    rows = ["user\titem\tplays"]
    coo = plays.tocoo()
    rows += [f"u{u}\t{names[i]}\t{int(p)}" for u, i, p in zip(coo.row, coo.col, coo.data)]
    (d / "plays.tsv").write_text("\n".join(rows) + "\n")
    m = d / "model"
    assert _recommend("import-plays", d / "plays.tsv", "--model", m).returncode == 0
    fit = _recommend("fit", "--model", m, "--no-tune")
    assert fit.returncode == 0, fit.stderr
    return m


@pytest.fixture(scope="module")
def server(library, model):
    s = Server(library["dir"], "--model", str(model), token=TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        _missing("Debian's chromium and chromium-driver are not installed (/usr/bin/chromium, /usr/bin/chromedriver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (the test extra)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads a browser or a driver
    os.environ["SE_AVOID_STATS"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    t0 = time.perf_counter()
    yield driver
    driver.quit()
    print(f"\nbrowser session {time.perf_counter() - t0:.1f} s")


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _fetch(driver, path: str, headers: dict | None = None) -> int:
    """The status the page's own fetch() gets (with its cookies, none other)."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {headers: arguments[1], credentials: 'same-origin'})"
        ".then(r => done(r.status), e => done(String(e)));", path, headers or {})


def _js(driver, expr: str):
    return driver.execute_script(f"return {expr};")


def _until(driver, expr: str, timeout_s: float, what: str):
    return _wait(lambda: _js(driver, expr), timeout_s, what, interval_s=0.1)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go."""
    return Path(os.environ.get("ANALYZE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots")).resolve()


@pytest.fixture(scope="module")
def page(server, browser):
    """The browser, logged in through the page's form (the first test checks the page before that)."""
    from selenium.webdriver.common.by import By

    browser.get(server.base + "/")
    if browser.find_elements(By.ID, "token"):
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _until(browser, "document.querySelectorAll('#tracks tbody tr').length === 3", 60, "the library's three rows")
    return browser


def test_without_the_login_the_page_gets_nothing(server, browser, library):
    from selenium.webdriver.common.by import By

    browser.get(server.base + "/")
    assert browser.find_elements(By.ID, "token") and not browser.find_elements(By.ID, "tracks")
    assert library["demo"] not in browser.page_source
    for path in ("/v1/library/tracks", f"/v1/tracks/{library['demo']}/audio", "/v1/library/status",
                 f"/v1/audio-analysis/{library['demo']}"):
        assert _fetch(browser, path) == 401, path
    assert _js(browser, "document.cookie") == ""  # HttpOnly: never visible to scripts, even after the login


def test_the_library_loads_without_console_errors_and_search_finds_a_track(page, server, library, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page.get_log("browser")  # what the login page logged (its 401) is left behind
    page.get(server.base + "/#/")
    _until(page, "document.querySelectorAll('#tracks tbody tr').length === 3", 30, "the library's rows")
    _until(page, "/3 analysed/.test(document.getElementById('status').textContent)", 30, "the indexing status")
    assert _js(page, "document.cookie") == ""
    box = page.find_element(By.ID, "search")
    box.send_keys("ensemble")
    _until(page, "document.querySelectorAll('#tracks tbody tr').length === 1", 10, "the search to narrow the list")
    assert page.find_element(By.CSS_SELECTOR, "#tracks tbody tr").get_attribute("data-id") == library["clicks"]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    _until(page, "document.querySelectorAll('#tracks tbody tr').length === 3", 10, "the whole list again")
    # sorting by tempo, then the other way
    tempo = "[...document.querySelectorAll('#tracks tbody tr')].map(r => Number(r.cells[4].textContent))"
    page.find_element(By.CSS_SELECTOR, "th[data-key=tempo] button").click()
    up = _js(page, tempo)
    assert up == sorted(up) and len(set(up)) == 3
    page.find_element(By.CSS_SELECTOR, "th[data-key=tempo] button").click()
    assert _js(page, tempo) == up[::-1]
    assert _fetch(page, f"/v1/tracks/{library['demo']}/audio", {"Range": "bytes=0-99"}) == 206
    assert page.save_screenshot(str(shots / "page-library.png"))
    assert _errors(page) == []
    # a file that cannot be analysed shows up with its reason while the page is open
    (library["dir"] / "broken.mp3").write_bytes(b"not audio at all " * 200)
    _until(page, "/broken\\.mp3/.test(document.getElementById('failure-list').textContent)", 60,
           "the failure on the page")
    assert "1 failed" in page.find_element(By.ID, "status").text
    # and a new song joins the list, without a reload
    x, sr, _ = synth.click_track(bpm=90, beats_per_bar=4, seconds=6, seed=5)
    synth.encode(library["dir"] / ".late.part.ogg", x, sr)
    os.replace(library["dir"] / ".late.part.ogg", library["dir"] / "late.ogg")
    _until(page, "document.querySelectorAll('#tracks tbody tr').length === 4", 120, "the new song in the list")
    assert "late" in page.find_element(By.ID, "tracks").text


def test_the_track_page_draws_plays_and_seeks(page, server, library, shots):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page.get_log("browser")
    page.get(server.base + f"/#/track/{library['demo']}?play")
    _until(page, "Number(document.getElementById('timeline').dataset.drawn) > 0", 30, "the analysis drawing")
    # the drawing is not blank: many colours across the canvas
    colours = _js(page, """(() => { const c = document.getElementById('timeline');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
        return seen.size; })()""")
    assert colours > 50
    _until(page, "document.getElementById('player').currentTime > 1", 30, "the audio to play")
    first = float(page.find_element(By.ID, "overlay").get_attribute("data-cursor"))
    _until(page, f"Number(document.getElementById('overlay').dataset.cursor) > {first} + 0.3", 30,
           "the cursor to move on")
    assert "beat" in page.find_element(By.ID, "now").text and "section" in page.find_element(By.ID, "now").text
    # more like this, from the fitted model: the waltz (the same listeners), not the clicks
    _until(page, "!document.getElementById('similar-box').hidden", 30, "more like this")
    similar = [a.get_attribute("href").rsplit("/", 1)[-1] for a in page.find_elements(By.CSS_SELECTOR, "#similar a")]
    assert similar and similar[0] == library["waltz"]
    assert page.save_screenshot(str(shots / "page-track.png"))
    # click three quarters of the way along: the play position goes there
    canvas = page.find_element(By.ID, "timeline")
    width = canvas.size["width"]
    ActionChains(page).move_to_element_with_offset(canvas, int(width * 0.25), 0).click().perform()
    duration = _js(page, "track.doc.track.duration")
    _until(page, f"Math.abs(document.getElementById('player').currentTime - {0.75 * duration}) < 3", 10,
           "the seek")
    _js(page, "document.getElementById('player').pause()")
    # the keyboard alone: the drawing takes the focus, Home and → move the play position
    canvas.send_keys(Keys.HOME)
    _until(page, "document.getElementById('player').currentTime < 0.5", 10, "Home")
    canvas.send_keys(Keys.ARROW_RIGHT)
    _until(page, "Math.abs(document.getElementById('player').currentTime - 5) < 0.5", 10, "→")
    # at a phone's width nothing spills sideways (the list scrolls inside its own box)
    page.set_window_size(390, 844)
    try:
        for view in (f"#/track/{library['demo']}", "#/", f"#/jukebox/{library['demo']}"):
            page.get(server.base + "/" + view)
            _until(page, "document.querySelectorAll('#tracks tbody tr').length >= 3", 30, "the page")
            time.sleep(0.5)
            assert _js(page, "document.documentElement.scrollWidth <= window.innerWidth"), view
    finally:
        page.set_window_size(1280, 1000)
    assert _errors(page) == []


def test_the_jukebox_takes_a_branch_and_plays_on(page, server, library, shots):
    page.get_log("browser")
    page.get(server.base + f"/#/jukebox/{library['clicks']}?play")
    _until(page, "Number(document.getElementById('branches').textContent) > 0", 30, "the branches")
    _until(page, "Number(document.getElementById('jumps').textContent) >= 1", 60, "a jump")
    played = int(_js(page, "document.getElementById('beats-played').textContent"))
    _until(page, f"Number(document.getElementById('beats-played').textContent) > {played} + 4", 30,
           "playback to go on after the jump")
    assert page.save_screenshot(str(shots / "page-jukebox.png"))
    # the threshold slider changes the branch count
    before = int(_js(page, "document.getElementById('branches').textContent"))
    _js(page, "(() => { const s = document.getElementById('threshold'); s.value = s.min;"
              " s.dispatchEvent(new Event('input')); })()")
    assert int(_js(page, "document.getElementById('branches').textContent")) < before
    _js(page, "document.getElementById('jb-play').click()")
    assert _errors(page) == []


def test_the_branch_finder_joins_beats_at_the_same_place_in_the_bar(page, server, library):
    """On the 4/4 click track (downbeats louder and higher), every branch joins beats at the same
    place in their bars; a zero threshold gives none, the slider's top many."""
    got = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.json()).then(doc => {
          const near = Jukebox.candidates(doc), t = Jukebox.defaultThreshold(near);
          const place = doc.beats.map(b => { let k = 0;
            for (const bar of doc.bars) if (bar.start <= b.start + 0.05) k = bar.start; return k; });
          const pos = doc.beats.map((b, i) => doc.beats.filter(c => c.start >= place[i] - 0.05
                                                                   && c.start < b.start - 0.05).length);
          const at = v => Jukebox.pairs(Jukebox.branches(near, v));
          const pairs = at(t.value);
          done({n: doc.beats.length, pairs: pairs.map(p => [pos[p.a], pos[p.b]]), none: at(0).length,
                top: at(t.max).length, last: Jukebox.lastBackward(Jukebox.branches(near, t.value))});
        }, e => done(String(e)));""", f"/v1/audio-analysis/{library['clicks']}")
    print(f"\n{len(got['pairs'])} branches at the default threshold, {got['top']} at the top, {got['n']} beats")
    assert got["pairs"] and all(a == b for a, b in got["pairs"]), got["pairs"]
    assert got["none"] == 0 and got["top"] > len(got["pairs"]) and got["last"] > got["n"] // 2


def test_the_page_ships_as_package_data_and_fetches_nothing_from_elsewhere():
    import fnmatch
    import re
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["analyzer"]
    files = sorted((ROOT / "analyzer" / "library" / "page").iterdir())
    assert {f.suffix for f in files} >= {".html", ".js", ".css"}
    for f in files:
        assert any(fnmatch.fnmatch(f"library/page/{f.name}", p) for p in patterns), f"{f.name} is not in the package data"
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{f.name} names another host"


def test_recommendations_come_from_the_fitted_model(server, library):
    body = server.get("/v1/recommendations", params={"seed_tracks": library["demo"], "limit": 10}).json()
    ids = [t["id"] for t in body["tracks"]]
    assert ids and ids[0] == library["waltz"] and library["demo"] not in ids
    assert body["seeds"][0]["id"] == library["demo"] and body["seeds"][0]["initialPoolSize"] > 3
