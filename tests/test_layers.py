"""The library's layers (docs/STYLE.md, "The map of the library"): no two of ccoat's modules
import each other, directly or around a loop, and no module of the paper's concepts imports an
instrument.

The import graph is read from the sources with ``ast``, imports inside functions included (a
lazy import is still a dependency). A module imported by a name computed at run time
(``importlib.import_module(f"ccoat.{name}")``) is not seen.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ccoat"

# The rooms of the map, from the bottom up.
CONCEPTS = {"hashing", "clustering", "attention", "model", "registry", "convert", "timm_weights",
            "token_clustering", "grid_clustering"}
INSTRUMENTS = {"cost", "measure", "sweep", "plotting", "data", "recipes", "train", "runfolder",
               "stats", "weights", "profile", "provenance"}
# The package itself (it imports the public interface) and the torch version check.
OTHERS = {"__init__", "_versions"}


def imported_modules(tree: ast.Module, package: str, modules: set[str]) -> dict[str, int]:
    """The ccoat modules a module's source imports, each with the line of its first import.
    ``import ccoat`` and ``from ccoat import name`` (not a module) import ``__init__``."""
    found: dict[str, int] = {}

    def add(module: str, line: int) -> None:
        found.setdefault(module, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package:
                    add(parts[1] if len(parts) > 1 else "__init__", node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                raise AssertionError(f"line {node.lineno}: an import from above the package")
            parts = (node.module or "").split(".") if node.module else []
            if node.level == 0:
                if not parts or parts[0] != package:
                    continue
                parts = parts[1:]
            if parts:  # from .cost import x, from ccoat.cost import x
                add(parts[0], node.lineno)
            else:  # from . import cost, from ccoat import create_model
                for alias in node.names:
                    add(alias.name if alias.name in modules else "__init__", node.lineno)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """Module -> {module it imports: line}, for every module of the package at ``root``."""
    sources = {path.stem: path for path in sorted(root.glob("*.py"))}
    return {name: imported_modules(ast.parse(path.read_text(), str(path)), root.name,
                                   set(sources))
            for name, path in sources.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (and modules importing
    themselves): the modules that import each other, directly or around a loop."""
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {module: reachable(module) for module in graph}
    components = []
    for module in sorted(graph):
        component = {other for other in reach[module] if module in reach[other]} | {module}
        if (len(component) > 1 or module in reach[module]) and component not in components:
            components.append(component)
    return components


def upward_imports(graph: dict[str, dict[str, int]], module: str) -> dict[str, int]:
    """What ``module`` imports from the instruments (or the whole package, which imports them)."""
    return {name: line for name, line in graph[module].items()
            if name in INSTRUMENTS or name == "__init__"}


GRAPH = import_graph()


def test_the_graph_is_read_and_every_module_has_a_room():
    assert set(GRAPH) == CONCEPTS | INSTRUMENTS | OTHERS, \
        "a module of ccoat that is in no room of tests/test_layers.py (or a room without module)"
    # A few imports the map has, one of each form, so that a parser reading nothing fails here.
    assert "attention" in GRAPH["model"]  # from .attention import (...)
    assert {"cost", "measure"} <= set(GRAPH["sweep"])  # from . import cost, measure
    assert "convert" in GRAPH["token_clustering"]  # from .convert import ... inside a function


def test_no_modules_import_each_other():
    found = cycles(GRAPH)
    assert not found, "modules that import each other (directly or around a loop): " + "; ".join(
        ", ".join(f"{m} imports {n} (line {GRAPH[m][n]})" for m in sorted(c) for n in
                  sorted(set(GRAPH[m]) & c)) for c in found)


@pytest.mark.parametrize("module", sorted(CONCEPTS))
def test_a_concept_imports_no_instrument(module):
    upward = upward_imports(GRAPH, module)
    assert not upward, f"ccoat/{module}.py imports instruments (or the whole package): " + \
        ", ".join(f"{name} (line {line})" for name, line in sorted(upward.items()))


def test_a_cycle_and_an_upward_import_are_found(tmp_path):
    """The checks above on a made-up package that breaks both rules."""
    package = tmp_path / "ccoat"
    package.mkdir()
    (package / "attention.py").write_text("def core():\n    from .model import make_core\n")
    (package / "model.py").write_text("from .attention import core\nimport ccoat.cost\n")
    (package / "cost.py").write_text("from ccoat import model\n")
    graph = import_graph(package)
    assert graph == {"attention": {"model": 2}, "model": {"attention": 1, "cost": 2},
                     "cost": {"model": 1}}
    assert cycles(graph) == [{"attention", "model", "cost"}]
    assert upward_imports(graph, "model") == {"cost": 2}
    assert upward_imports(graph, "attention") == {}
