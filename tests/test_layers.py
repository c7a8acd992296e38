"""The layer rule: a module of ``analyzer`` imports only its own layer and the layers below it.

Layers, low to high (CONTRIBUTING.md): the base (``errors``, ``console``), the stages
(``analyzer.stages``), the document (``pipeline``, ``document``, ``embedding``, ``report``), running many
files (``analyzer.run``), the library and its server (``analyzer.library``), the command line
(``analyzer.cli``).  Every import counts, those inside functions too.  The analyzer never imports
``cnn``, ``recommender`` or torch (they build on it; the CLI reaches the recommender by name only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "analyzer"
LAYERS = ("base", "stages", "document", "run", "library", "cli")
BASE = {"analyzer", "analyzer.errors", "analyzer.console"}
DOCUMENT = {"analyzer.pipeline", "analyzer.document", "analyzer.embedding", "analyzer.report"}
FOREIGN = ("cnn", "recommender", "torch")
# the package's facade: ``from analyzer import analyze_file`` loads ``analyzer.run.api`` on first use
FACADE = {("analyzer", "analyzer.run"), ("analyzer", "analyzer.run.api")}


def layer_of(module: str) -> int:
    """The layer index of a module of the package (ValueError for a module outside the layers)."""
    if module in BASE:
        return LAYERS.index("base")
    if module in DOCUMENT:
        return LAYERS.index("document")
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("stages", "run", "library", "cli"):  # the layers that are folders
        return LAYERS.index(parts[1])
    raise ValueError(f"{module} is in no layer: add it to one (tests/test_layers.py, CONTRIBUTING.md)")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``source``, relative ones resolved."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # `from analyzer.stages import audio` imports the module analyzer.stages.audio
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What in ``source`` (the module ``module``) breaks the layer rule."""
    own = layer_of(module)
    bad = []
    for target, line in imports_of(source, module, is_package):
        top = target.split(".")[0]
        if top in FOREIGN:
            bad.append(f"{module}:{line} imports {target} (the analyzer does not build on it)")
            continue
        if top != "analyzer" or (module, target) in FACADE:
            continue
        try:
            theirs = layer_of(target)
        except ValueError:
            # a name imported from a module (`from analyzer.errors import InputError`): its module counts
            continue
        if theirs > own:
            bad.append(f"{module}:{line} ({LAYERS[own]}) imports {target} ({LAYERS[theirs]})")
    return bad


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))  # raises for a module in no layer


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        bad += violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("module", "source"), [
    ("analyzer.stages.rhythm", "from analyzer.document import build_document\n"),
    ("analyzer.stages.rhythm", "def f():\n    from analyzer.run import batch\n"),
    ("analyzer.run.batch", "from analyzer.library.store import Indexer\n"),
    ("analyzer.library.serve", "import analyzer.cli\n"),
    ("analyzer.pipeline", "from .run.batch import Resources\n"),
    ("analyzer.stages.features", "import torch\n"),
    ("analyzer.document", "from recommender import serving\n"),
])
def test_the_rule_catches_an_upward_import(module, source):
    assert violations(source, module)


def test_the_rule_allows_downward_and_same_layer_imports():
    assert violations("from analyzer.stages.audio import decode\nfrom analyzer.errors import InputError\n"
                      "from analyzer.run import workers\n", "analyzer.run.batch") == []
    assert violations("from . import features as F\n", "analyzer.stages.key") == []
