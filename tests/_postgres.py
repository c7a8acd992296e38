"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl on a temporary folder.

The cluster listens on 127.0.0.1 at a free port (and on a unix socket in its folder), trusts
local connections, and is stopped and deleted at the end.  No system service is used.  As
root, PostgreSQL refuses to run, so its programs run as the ``postgres`` system user (the
Debian package makes it) through ``runuser``, on a folder that user owns.

Where the programs or psycopg are missing the tests skip with the reason, except in CI
(``CI=true``), where they fail: the PostgreSQL path must run there.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/install installs them)", pytrace=False)
    pytest.skip(reason)


def _program(name: str) -> str | None:
    """`name` on PATH, or in Debian's /usr/lib/postgresql/VERSION/bin (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running cluster; `database(name)` makes an empty database and gives its URL."""

    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _missing("psycopg is not installed (pip install '.[postgres]')")
        initdb, self.pg_ctl = _program("initdb"), _program("pg_ctl")
        if not initdb or not self.pg_ctl:
            _missing("PostgreSQL is not installed here (no initdb/pg_ctl; apt-get install postgresql)")
        self.prefix: list[str] = []
        # straight under /tmp: the socket path must stay short, and the postgres user must reach it
        self.base = Path(tempfile.mkdtemp(prefix="analyze-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                _missing("running as root without runuser: PostgreSQL will not start as root")
            try:
                shutil.chown(self.base, "postgres", "postgres")
            except LookupError:
                _missing("running as root and there is no postgres user to run PostgreSQL as")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.base / "data", _free_port()
        self.url = f"postgresql://analyze@127.0.0.1:{self.port}"
        self._run(initdb, "-D", str(self.data), "-U", "analyze", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(self.pg_ctl, "-D", str(self.data), "-w", "-t", "60", "-l", str(self.base / "log"),
                  "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self._n = 0

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self.prefix, *cmd], capture_output=True, timeout=120)
        if proc.returncode != 0:
            log = self.base / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')[-2000:]}\n{tail}")

    def database(self, name: str | None = None) -> str:
        """A new empty database's URL."""
        import psycopg

        self._n += 1
        name = name or f"lib{self._n}"
        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)
