"""Stand-ins for the analysis, so CLI tests of the batch machinery run in seconds and decide
what each worker does from the input's name.

A test runs the real entry point with these installed (`FAKE_ANALYZE` in test_batch.py).
Spawned workers find them by name (`_cli_fakes.fake_run_one`), because this folder is on
the sys.path they inherit.  Names:

- "...oom...":   the worker kills itself with SIGKILL, as the kernel's out-of-memory killer would
- "...block...": the task never ends (until the worker is stopped)
- anything else: a tiny document, at once

Every task first leaves a marker holding its worker's pid (`marker(source, "started")`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the real CLI in a fresh interpreter, and the same with these stand-ins installed
ANALYZE = [sys.executable, "-c", "from analyzer.cli import main; main()"]
FAKE_ANALYZE = [
    sys.executable, "-c",
    "import sys; sys.path.insert(0, 'tests'); import _cli_fakes; _cli_fakes.install(); "
    "from analyzer.cli import main; main()",
]


def marker(source, kind: str) -> Path:
    """Where a fake task records `kind` for `source` (hashed: the test names can be 255 bytes long)."""
    source = Path(source)
    digest = hashlib.md5(os.fsencode(source.name)).hexdigest()
    return source.parent / ".fake" / f"{digest}.{kind}"


def _mark(source, kind: str) -> None:
    m = marker(source, kind)
    m.parent.mkdir(exist_ok=True)
    tmp = m.with_name(f"{m.name}.{os.getpid()}.part")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, m)  # a reader never sees an empty marker


def _act(source) -> None:
    _mark(source, "started")
    name = Path(source).name
    if "oom" in name:
        os.kill(os.getpid(), signal.SIGKILL)
    if "block" in name:
        while True:
            time.sleep(60)


def fake_run_one(resources, job, options):
    from analyzer.run.batch import Result

    _act(job.source)
    return Result(job, b'{"fake": true}', 1.0, None)


def fake_worker_resources(options) -> None:
    # the real setup loads the networks: nothing to load here
    return None


def fake_file_codes_or_error(path, decode_params=None):
    from analyzer.library.catalog import FileCodes

    _act(path)
    n = 200
    rng = np.random.default_rng(len(str(path)))
    return FileCodes(
        path=str(Path(path).resolve()), mtime_ns=Path(path).stat().st_mtime_ns, duration_s=1.0, sample_md5="0" * 32,
        title="", artist="", times=np.arange(n), codes=rng.integers(0, 2**20, n), chroma=np.zeros(16, dtype=np.uint32),
    )


def install() -> None:
    import analyzer.run.batch as batch
    import analyzer.library.catalog as catalog

    batch.run_one = fake_run_one
    batch.worker_resources = fake_worker_resources
    catalog.file_codes_or_error = fake_file_codes_or_error


def counting_setup(folder) -> dict:
    """A worker setup that records each call (one file per call) and returns its resources."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    (Path(folder) / f"setup-{token}").write_text("")
    return {"pid": os.getpid(), "token": token}


def report_resources(resources: dict, x: int) -> tuple:
    """A task: what it was handed, from which process."""
    return resources["pid"], os.getpid(), resources["token"], x * x
