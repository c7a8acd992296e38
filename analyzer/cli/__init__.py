"""`analyze`: Typer only. Options -> config -> library calls -> write -> exit code.

One module per command: `analyze` (the main command), `catalog` (index, identify), `features`, `serve`;
`common` holds what they share.  Nothing imports the CLI.
"""

from __future__ import annotations

import sys

from analyzer.cli.analyze import app
from analyzer.cli.common import _err, _install_stop_handlers, _stopped, catalog_app
from analyzer.cli import catalog, features, serve  # noqa: F401  (each adds its commands to catalog_app)

SUBCOMMANDS = ("index", "identify", "features", "serve")
CATALOG_COMMANDS = SUBCOMMANDS  # the old name


def main() -> None:
    _install_stop_handlers()
    try:
        if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
            # `analyze index ...` / `identify ...` / `serve ...`; anything else is a path to analyze
            catalog_app()
            return
        app()
    except KeyboardInterrupt as exc:
        word, code = _stopped(exc)
        _err(word)
        sys.exit(code)


__all__ = ["app", "catalog_app", "main"]
