"""The README's field table names, for each Echo Nest field, the functions that compute it: they must exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_function_the_field_table_names_exists():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| field | computed by"):]
    table_end = next(i for i, line in enumerate(table.splitlines()[2:]) if not line.startswith("|"))
    rows = table.splitlines()[2 : 2 + table_end]
    named = [m for row in rows for m in re.findall(r"`([a-z_]+)\.([A-Za-z_]+)`", row.split("|")[2])]
    assert len(rows) >= 10 and len(named) >= len(rows)
    missing = [f"{mod}.{name}" for mod, name in named if not hasattr(_module(mod), name)]
    assert not missing, missing


def _module(name: str):
    """``analyzer.NAME`` wherever its layer keeps it: a stage, the document layer, a runner, the library."""
    for package in ("analyzer.stages", "analyzer", "analyzer.run", "analyzer.library"):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
    raise AssertionError(f"the README names a module no layer holds: {name}")
