"""`recommend` against hostile input (issue 15): tables that are not text, odd line ends, endless
lines, counts past float32, saved models whose data is damaged, and model versions piling up."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "recommender.cli", *map(str, args)], capture_output=True, input=stdin)


def _one_line_error(r, *, code: int = 1) -> str:
    """The CLI's contract for a refusal: exit code, one `error:` line, no traceback."""
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert b"Traceback" not in r.stderr, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _plays_table(n_users: int = 30, n_items: int = 40, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = ["user\titem\tplays"]
    for u in range(n_users):
        for it in rng.choice(n_items, size=10, replace=False):
            rows.append(f"u{u:02d}\tt{it:02d}\t{int(rng.integers(1, 100))}")
    return rows


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small fitted model folder (30 listeners, 40 items, terms) to copy and damage."""
    d = tmp_path_factory.mktemp("fitted")
    (d / "plays.tsv").write_text("\n".join(_plays_table()) + "\n")
    (d / "terms.csv").write_text("item,term,weight\n" + "\n".join(f"t{i:02d},g{i % 3},1" for i in range(40)) + "\n")
    model = d / "model"
    assert _cli("import-plays", d / "plays.tsv", "--model", model).returncode == 0
    assert _cli("import-terms", d / "terms.csv", "--model", model).returncode == 0
    r = _cli("fit", "--model", model, "--no-tune")
    assert r.returncode == 0, r.stderr
    return model


# --- item 13: tables --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["import-plays", "import-terms"])
def test_binary_files_are_refused_in_one_line(fitted, tmp_path, command):
    """A gzipped table, the catalog itself, audio: each used to end in a _csv.Error traceback."""
    plays = "\n".join(_plays_table()) + "\n"
    gz = tmp_path / "plays.tsv.gz"
    gz.write_bytes(gzip.compress(plays.encode(), mtime=0))
    wav = tmp_path / "song.tsv"
    rng = np.random.default_rng(0)
    # a WAV header and noise: what `import-plays songs/x.wav` would read
    wav.write_bytes(b"RIFF\x24\x10\x00\x00WAVEfmt " + (rng.standard_normal(4000) * 3000).astype("<i2").tobytes())
    for path, expect in ((gz, "gzip-compressed"), (fitted / "catalog.db", "SQLite database"), (wav, "binary data")):
        line = _one_line_error(_cli(command, path, "--model", tmp_path / "m"))
        assert str(path) in line and expect in line, line
    assert not (tmp_path / "m").exists()  # refused before a model folder was made


def test_cr_only_line_ends_are_read_as_lines(tmp_path):
    """Old Macintosh line ends (CR only): the whole file used to be one line and a _csv.Error."""
    plays = tmp_path / "cr.tsv"
    plays.write_bytes(b"user\titem\tplays\ru1\ti1\t3\ru1\ti2\tlots\ru2\ti2\t4\r")
    r = _cli("import-plays", plays, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    # the bad row is named by the line an editor shows it on
    assert b"2 plays imported" in r.stderr and b"cr.tsv:3: plays 'lots'" in r.stderr
    terms = tmp_path / "cr.csv"
    terms.write_bytes(b"item,term\r\ni1,jazz\ri2,metal\r")  # mixed CRLF and CR
    r = _cli("import-terms", terms, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "m" / "catalog.db") as db:
        assert sorted(t for (t,) in db.execute("SELECT term FROM terms")) == ["jazz", "metal"]


def test_a_line_past_the_length_limit_is_skipped_as_a_malformed_row(tmp_path):
    """A line longer than MAX_LINE_CHARS is reported as FILE:LINE and skipped (--strict refuses the
    file); it used to be read whole (1.2 GB for 200 MB) and end in a field-limit traceback."""
    from recommender.data import MAX_LINE_CHARS

    rows = _plays_table(n_users=3)
    rows.insert(3, "u99\t" + "x" * (MAX_LINE_CHARS + 10) + "\t5")
    table = tmp_path / "long.tsv"
    table.write_text("\n".join(rows) + "\n")
    r = _cli("import-plays", table, "--model", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert f"long.tsv:4: line longer than {MAX_LINE_CHARS:,} characters" in err, err
    assert f"{len(rows) - 2} plays imported" in err
    _one_line_error(_cli("import-plays", table, "--model", tmp_path / "m2", "--strict"))
    # a header past the limit is no table at all
    head = tmp_path / "head.tsv"
    head.write_text("user\titem\t" + "p" * (MAX_LINE_CHARS + 10) + "\nu1\ti1\t3\n")
    assert "longer than" in _one_line_error(_cli("import-plays", head, "--model", tmp_path / "m3"))
    # a field past the csv module's own limit (on a line under ours) is a malformed row as well
    field = tmp_path / "field.tsv"
    field.write_text("user\titem\tplays\nu1\ti1\t3\nu2\t" + "y" * 200_000 + "\t4\nu3\ti3\t2\n")
    r = _cli("import-plays", field, "--model", tmp_path / "m4")
    assert r.returncode == 0 and b"field.tsv:3: field larger than field limit" in r.stderr, r.stderr


def test_counts_past_float32_are_malformed_rows_and_fit_still_works(tmp_path):
    """1e39 is finite in Python and inf in float32; 1e37 fits float32 but gave NaN factors at fit."""
    rows = _plays_table()
    rows += ["u00\tt01\t1e39", "u01\tt02\t1e37", "u02\tt03\t1e400"]
    table = tmp_path / "big.tsv"
    table.write_text("\n".join(rows) + "\n")
    model = tmp_path / "m"
    r = _cli("import-plays", table, "--model", model)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    n = len(rows)
    assert f"big.tsv:{n - 2}: plays '1e39' is out of range" in err and f"big.tsv:{n - 1}: plays '1e37'" in err, err
    assert f"big.tsv:{n}: plays '1e400' must be a positive number" in err, err
    _one_line_error(_cli("import-plays", table, "--model", tmp_path / "m2", "--strict"))
    terms = tmp_path / "terms.csv"
    terms.write_text("item,term,weight\nt01,jazz,2\nt02,metal,1e39\n")
    r = _cli("import-terms", terms, "--model", model)
    assert r.returncode == 0 and b"terms.csv:3: weight '1e39' is out of range" in r.stderr, r.stderr
    fit = _cli("fit", "--model", model)
    assert fit.returncode == 0, fit.stderr


def test_a_catalog_written_before_the_range_check_is_refused_at_fit(fitted, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    with sqlite3.connect(model / "catalog.db") as db:
        db.execute("UPDATE plays SET plays = 1e39 WHERE (user, item) = (SELECT user, item FROM plays LIMIT 1)")
    line = _one_line_error(_cli("fit", "--model", model))
    assert "catalog.db" in line and "play count(s) out of range" in line, line


# --- item 12: damaged models --------------------------------------------------------------------


def _tensor_offsets(path: Path) -> tuple[dict, int]:
    """The safetensors header (name -> dtype, shape, data_offsets) and where the data starts."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), 8 + n


def _overwrite(path: Path, name: str, values: np.ndarray) -> None:
    """Replace one tensor's bytes in place, the header untouched (what a bad disk or copy does)."""
    header, base = _tensor_offsets(path)
    start, end = header[name]["data_offsets"]
    raw = np.ascontiguousarray(values).tobytes()
    assert len(raw) == end - start
    with open(path, "r+b") as f:
        f.seek(base + start)
        f.write(raw)


def _damaged_copy(fitted: Path, tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    return model, model / "models" / "v0001"


def _refused_as_damaged(model: Path, file: str) -> None:
    line = _one_line_error(_cli("playlist", "--model", model, "--user", "u00", "-n", "5"))
    assert f"v0001/{file}: damaged model" in line and f"refit it (recommend fit --model {model})" in line, line


def test_random_data_behind_an_intact_header_is_refused(fitted, tmp_path):
    """Was: a ValueError traceback from scipy (index pointer size)."""
    model, version = _damaged_copy(fitted, tmp_path)
    arrays = version / "arrays.safetensors"
    _, base = _tensor_offsets(arrays)
    size = arrays.stat().st_size - base
    with open(arrays, "r+b") as f:
        f.seek(base)
        f.write(np.random.default_rng(0).bytes(size))
    _refused_as_damaged(model, "arrays.safetensors")


def test_an_out_of_range_sparse_index_is_refused_not_a_crash(fitted, tmp_path):
    """Was: a segmentation fault inside scipy (exit -11)."""
    model, version = _damaged_copy(fitted, tmp_path)
    arrays = version / "arrays.safetensors"
    header, _ = _tensor_offsets(arrays)
    indices = np.zeros(header["plays.indices"]["shape"], dtype=np.int64)
    indices[3] = 10**9
    _overwrite(arrays, "plays.indices", indices)
    _refused_as_damaged(model, "arrays.safetensors")


def test_nan_factors_are_refused_not_empty_playlists(fitted, tmp_path):
    """Was: exit 0 and a playlist with no items."""
    model, version = _damaged_copy(fitted, tmp_path)
    arrays = version / "arrays.safetensors"
    header, _ = _tensor_offsets(arrays)
    _overwrite(arrays, "als.item_factors", np.full(header["als.item_factors"]["shape"], np.nan, dtype=np.float32))
    _refused_as_damaged(model, "arrays.safetensors")


@pytest.mark.parametrize("key", ["users", "items", "item_names", "terms", "params", "weights"])
def test_a_manifest_missing_a_key_is_refused(fitted, tmp_path, key):
    """Was: a KeyError traceback."""
    model, version = _damaged_copy(fitted, tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    del manifest[key]
    (version / "manifest.json").write_text(json.dumps(manifest))
    _refused_as_damaged(model, "manifest.json")


def _set(path: str, value):
    """A manifest edit: the manifest with the value at a dotted path replaced."""
    def edit(m):
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[p]
        node[last] = value
        return m
    return edit


def _pop(path: str):
    def edit(m):
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[p]
        if isinstance(node, list):
            node.pop()
        else:
            del node[last]
        return m
    return edit


def _array_edit(name: str, change):
    def edit(arrays):
        arrays[name] = change(arrays[name].copy())
    return edit


def _drop(name: str):
    def edit(arrays):
        del arrays[name]
    return edit


def _put(a, i, v):
    a.ravel()[i] = v
    return a


MANIFEST_DAMAGE = {
    "a list, not an object": lambda m: [m],
    "factors a string": _set("params.als.factors", "many"),
    "unknown weighting": _set("params.als.weighting", "tfidf"),
    "als key missing": _pop("params.als.alpha"),
    "weights all 0": _set("weights", {"cf": 0, "ease": 0, "knn": 0, "terms": 0, "audio": 0}),
    "weight NaN": _set("weights.cf", float("nan")),
    "names not strings": _set("users", [1, 2, 3]),
    "item names too short": _pop("item_names.last"),
    "knn_k negative": _set("params.knn_k", -1),
}

ARRAY_DAMAGE = {
    "factors missing": _drop("als.user_factors"),
    "factors of another rank": _array_edit("als.item_factors", lambda a: a[:, :-1].copy()),
    "factors huge": _array_edit("als.user_factors", lambda a: _put(a, 5, 1e30)),
    "factors as integers": _array_edit("als.user_factors", lambda a: a.astype(np.int32)),
    "exposure inf": _array_edit("exposure", lambda a: _put(a, 0, np.inf)),
    "indptr decreasing": _array_edit("plays.indptr", lambda a: _put(a, 5, 10**6)),
    "indptr short": _array_edit("plays.indptr", lambda a: a[:-1].copy()),
    # increasing only if np.diff wraps around: 2**63 - 1 then -2
    "indptr wrapping": _array_edit("plays.indptr", lambda a: _put(_put(a, 1, 2**63 - 1), 2, -2)),
    "negative index": _array_edit("term_counts.indices", lambda a: _put(a, 0, -1)),
    "shape off": _array_edit("user_tags.shape", lambda a: a + 1),
    "plays NaN": _array_edit("plays.data", lambda a: _put(a, 0, np.nan)),
    "ease items out of range": _array_edit("ease.items", lambda a: _put(a, len(a) - 1, 10**6)),
    "ease half missing": _drop("ease.B"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE) + list(ARRAY_DAMAGE))
def test_every_kind_of_damage_is_one_input_error(fitted, tmp_path, damage):
    """Each check of recommender.integrity, through persist.load: InputError naming the file, never a
    traceback from inside numpy, scipy or the model classes."""
    from safetensors.numpy import load_file, save_file

    from analyzer.errors import InputError
    from recommender.persist import load

    _, version = _damaged_copy(fitted, tmp_path)
    if damage in MANIFEST_DAMAGE:
        manifest = json.loads((version / "manifest.json").read_text())
        (version / "manifest.json").write_text(json.dumps(MANIFEST_DAMAGE[damage](manifest)))
        file = "manifest.json"
    else:
        arrays = load_file(str(version / "arrays.safetensors"))
        ARRAY_DAMAGE[damage](arrays)
        save_file(arrays, str(version / "arrays.safetensors"))
        file = "arrays.safetensors"
    with pytest.raises(InputError, match=rf"{file}: damaged model \(.+\); refit it"):
        load(version)


def test_an_intact_model_passes_the_checks(fitted):
    from recommender.persist import load

    rec = load(fitted / "models" / "v0001")
    assert rec.als.item_factors.shape[0] == 40 and np.isfinite(rec.als.item_factors).all()


# --- item 15: old versions and an interrupted fit's leftovers -----------------------------------


def _versions(model: Path) -> list[str]:
    """Everything in the models folder but the fit lock."""
    return sorted(p.name for p in (model / "models").iterdir() if p.name != ".fit.lock")


def test_fit_keeps_the_newest_versions_and_clears_what_an_interrupted_fit_left(fitted, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    for name in ("v0002", "v0003"):  # earlier fits
        shutil.copytree(model / "models" / "v0001", model / "models" / name)
    # what fits killed while writing leave: unfinished versions (the one this fit would reuse the
    # number of, which the old code cleared, and one it would not), a half-removed old version
    for name in (".v0004.tmp", ".v0002.tmp"):
        (model / "models" / name).mkdir()
        (model / "models" / name / "arrays.safetensors").write_bytes(b"\0" * 100)
    (model / "models" / ".v0001.del").mkdir()
    (model / ".CURRENT.tmp").write_text("v0004\n")
    r = _cli("fit", "--model", model, "--no-tune")  # --keep 2 by default
    assert r.returncode == 0, r.stderr
    assert (model / "CURRENT").read_text().strip() == "v0004"
    assert _versions(model) == ["v0003", "v0004"], _versions(model)
    assert not (model / ".CURRENT.tmp").exists()
    err = r.stderr.decode()
    assert "left by an interrupted fit" in err and "removed old model version(s) v0001, v0002" in err, err
    r = _cli("fit", "--model", model, "--no-tune", "--keep", "1")
    assert r.returncode == 0, r.stderr
    assert _versions(model) == ["v0005"]
    assert _cli("playlist", "--model", model, "--user", "u00", "-n", "3").returncode == 0
    usage = _cli("fit", "--model", model, "--keep", "0")
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr


def test_pruning_never_removes_the_version_current_names(fitted, tmp_path):
    """A folder rolled back by hand (CURRENT names an older version): that one stays whatever --keep says."""
    from recommender.store import Store

    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    for name in ("v0002", "v0003", "v0004"):
        shutil.copytree(model / "models" / "v0001", model / "models" / name)
    (model / "CURRENT").write_text("v0002\n")
    st = Store(model)
    assert st.prune(keep=1) == ["v0001", "v0003"]
    assert _versions(model) == ["v0002", "v0004"]
    assert st.current().name == "v0002"


def test_leftovers_that_are_links_are_unlinked_not_followed(fitted, tmp_path):
    from recommender.store import Store

    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the model's")
    (model / "models" / ".v0007.tmp").symlink_to(elsewhere, target_is_directory=True)
    with Store(model).fitting() as cleared:
        assert cleared == ["models/.v0007.tmp"]
    assert (elsewhere / "keep.txt").is_file() and not (model / "models" / ".v0007.tmp").is_symlink()


def test_a_second_fit_on_the_same_folder_is_refused_while_one_runs(fitted, tmp_path):
    """The leftovers a fit clears must be a dead fit's, never a running one's: fits hold a lock."""
    fcntl = pytest.importorskip("fcntl")
    model = tmp_path / "m"
    shutil.copytree(fitted, model)
    (model / "models" / ".v0002.tmp").mkdir()  # as if the running fit were writing it
    with open(model / "models" / ".fit.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = _one_line_error(_cli("fit", "--model", model, "--no-tune"))
    assert "another fit" in line, line
    assert (model / "models" / ".v0002.tmp").is_dir()


def test_a_model_folder_holding_another_programs_database_is_refused_untouched(tmp_path):
    from analyzer.library.catalog import Catalog
    from analyzer.errors import InputError
    from recommender.store import Store

    folder = tmp_path / "model"
    folder.mkdir()
    Catalog(folder / "catalog.db", create=True).close()  # an identification catalog in its place
    before = (folder / "catalog.db").read_bytes()
    with pytest.raises(InputError, match="identification catalog|recommender catalog"):
        Store(folder)
    assert (folder / "catalog.db").read_bytes() == before
