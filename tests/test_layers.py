"""The library's layers (docs/STYLE.md, "The map of the library") and the rules that keep them
tidy: no two of ccoat's modules import each other, directly or around a loop; no module of the
paper's concepts imports an instrument; no module imports another's private name (one starting
with ``_``), nor reaches for one through a module it imported; and no module has a module-level
``__getattr__`` (names answered at run time, which hides what a module holds and what it
imports).

The import graph is read from the sources with ``ast``, imports inside functions included (a
lazy import is still a dependency). A module imported by a name computed at run time
(``importlib.import_module(f"ccoat.{name}")``) is not seen.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ccoat"

# The rooms of the map, from the bottom up. ``checks`` (what "an integer" and "a number" are) is
# the floor under them all: a concept room, so it may import no instrument, and it imports no
# other module of ccoat at all (tested below), so that every room may use it.
FLOOR = "checks"
CONCEPTS = {FLOOR, "hashing", "clustering", "attention", "model", "registry", "convert",
            "timm_weights", "token_clustering", "grid_clustering"}
INSTRUMENTS = {"cost", "measure", "sweep", "plotting", "prose", "data", "recipes", "evaluate",
               "train", "runfolder", "stats", "weights", "profile", "provenance"}
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


def parsed_modules(root: Path = PACKAGE) -> dict[str, ast.Module]:
    """Module name -> its parsed source, for every module of the package at ``root``."""
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(root.glob("*.py"))}


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """Module -> {module it imports: line}, for every module of the package at ``root``."""
    trees = parsed_modules(root)
    return {name: imported_modules(tree, root.name, set(trees)) for name, tree in trees.items()}


def private_names_used(tree: ast.Module, package: str, modules: set[str]) -> list[str]:
    """Where a module's source takes a private name (``_x``) of another module of the package:
    ``from .cost import _x``, ``from ccoat.cost import _x``, ``from ccoat import _x``, and
    ``cost._x`` / ``ccoat.cost._x`` through a module it imported (``from . import cost``,
    ``import ccoat.cost as c``). Each as ``"line N: module._x"``. A private module of the package
    (``from ._versions import check_torch``) is not a private name of another module."""
    found = []
    bound: dict[str, str] = {package: "__init__"}  # a name in this module -> the ccoat module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package and len(parts) == 2 and alias.asname:
                    bound[alias.asname] = parts[1]
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.module else []
            if node.level == 0:
                if not parts or parts[0] != package:
                    continue
                parts = parts[1:]
            source = parts[0] if parts else "__init__"
            for alias in node.names:
                if not parts and alias.name in modules:  # from . import cost
                    bound[alias.asname or alias.name] = alias.name
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: {source}.{alias.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") \
                or node.attr.startswith("__"):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in bound and value.id != package:
            found.append(f"line {node.lineno}: {bound[value.id]}.{node.attr}")
        elif (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
              and value.value.id == package and value.attr in modules):  # ccoat.cost._x
            found.append(f"line {node.lineno}: {value.attr}.{node.attr}")
        elif isinstance(value, ast.Name) and value.id == package:  # ccoat._x
            found.append(f"line {node.lineno}: __init__.{node.attr}")
    return sorted(found, key=lambda where: int(where.split()[1][:-1]))


def module_getattr(tree: ast.Module) -> list[int]:
    """The lines where a module defines or assigns a module-level ``__getattr__`` (at its top
    level or inside an ``if``/``try``/``with`` there, not in a class or function)."""
    lines, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == "__getattr__":
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__getattr__" for t in targets):
                lines.append(node.lineno)
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            if any((alias.asname or alias.name) == "__getattr__" for alias in node.names):
                lines.append(node.lineno)
        elif not isinstance(node, ast.ClassDef):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return sorted(lines)


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
TREES = parsed_modules()


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


def test_the_floor_imports_no_other_module():
    assert GRAPH[FLOOR] == {}, f"ccoat/{FLOOR}.py imports other modules of ccoat: {GRAPH[FLOOR]}"
    assert FLOOR in GRAPH["hashing"] and FLOOR in GRAPH["sweep"]  # a concept and an instrument


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


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_module_takes_another_modules_private_name(module):
    """A name that starts with ``_`` is its module's own business: another module that needs it
    needs it public (a docstring saying what it is), or in its own module."""
    found = private_names_used(TREES[module], PACKAGE.name, set(TREES))
    assert not found, f"ccoat/{module}.py takes private names of other modules: " + \
        ", ".join(found)


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_module_answers_names_at_run_time(module):
    """No module-level ``__getattr__``: what a module holds is what its source defines."""
    lines = module_getattr(TREES[module])
    assert not lines, f"ccoat/{module}.py has a module-level __getattr__ (line " + \
        ", ".join(map(str, lines)) + ")"


def test_a_private_name_and_a_module_getattr_are_found(tmp_path):
    """The two checks above on a made-up package that breaks both rules, in every form."""
    package = tmp_path / "ccoat"
    package.mkdir()
    (package / "__init__.py").write_text("from ._versions import check\n_torch = 1\n")
    (package / "_versions.py").write_text("def check():\n    pass\n")
    (package / "cost.py").write_text(
        "def _as_hw():\n    pass\n\n\nif True:\n    def __getattr__(name):\n        pass\n")
    (package / "measure.py").write_text(
        "from .cost import _as_hw, check\n"  # line 1
        "from ccoat.cost import _as_hw as hw\n"  # line 2
        "from . import cost\n"  # line 3
        "import ccoat.cost as c\n"  # line 4
        "import ccoat\n"  # line 5
        "def f():\n"  # line 6
        "    from ccoat import _torch\n"  # line 7
        "    return cost._as_hw, c._as_hw, ccoat.cost._as_hw, ccoat._torch, cost.__name__\n"
        "class Lazy:\n"  # line 9: a class's __getattr__ is not the module's
        "    def __getattr__(self, name):\n"
        "        pass\n"
        "__getattr__ = f\n")  # line 12
    trees = parsed_modules(package)
    modules = set(trees)
    assert private_names_used(trees["measure"], "ccoat", modules) == [
        "line 1: cost._as_hw", "line 2: cost._as_hw", "line 7: __init__._torch",
        "line 8: cost._as_hw", "line 8: cost._as_hw", "line 8: cost._as_hw",
        "line 8: __init__._torch"]
    assert private_names_used(trees["__init__"], "ccoat", modules) == []
    assert module_getattr(trees["cost"]) == [6]
    assert module_getattr(trees["measure"]) == [12]
    assert module_getattr(trees["__init__"]) == []



# ---------------------------------------------------------------------------------------------
# The size of things: a function reads in one screen, a private helper takes few arguments
# (several that travel together are one object, as fit's phases take one run).

MAX_FUNCTION_LINES = 80
MAX_HELPER_PARAMETERS = 5


def long_functions(tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Every function or method of more than ``limit`` lines (its ``def`` to its last line,
    docstring included), as ``"name (line N): L lines"``."""
    return [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def crowded_helpers(tree: ast.Module, limit: int = MAX_HELPER_PARAMETERS) -> list[str]:
    """Every private function or method (``_name``, not ``__dunder__``) taking more than
    ``limit`` parameters (``*args`` and ``**kwargs`` count one each; ``self`` and ``cls``
    none), as ``"name (line N): P parameters"``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not node.name.startswith("_") or node.name.startswith("__"):
            continue
        a = node.args
        names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p]
        count = len([n for n in names if n not in ("self", "cls")])
        if count > limit:
            found.append(f"{node.name} (line {node.lineno}): {count} parameters")
    return found


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_function_is_longer_than_a_screen(module):
    found = long_functions(TREES[module])
    assert not found, f"ccoat/{module}.py has functions over {MAX_FUNCTION_LINES} lines: " + \
        ", ".join(found)


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_private_helper_takes_more_than_five_parameters(module):
    found = crowded_helpers(TREES[module])
    assert not found, f"ccoat/{module}.py has private helpers of more than " \
        f"{MAX_HELPER_PARAMETERS} parameters: " + ", ".join(found)


def test_a_long_function_and_a_crowded_helper_are_found():
    """The two checks above on made-up sources at and just past each limit."""
    body = "\n".join(["def f():"] + ["    x = 1"] * 79)  # 80 lines: at the limit
    longer = body + "\n    x = 2\n"  # 81 lines
    assert long_functions(ast.parse(body)) == []
    assert long_functions(ast.parse("class A:\n" + "\n".join(
        "    " + line for line in longer.splitlines()))) == ["f (line 2): 81 lines"]
    tree = ast.parse("def _five(self, a, b, c, *d, e):\n    pass\n"
                     "def _six(a, b, c, d, e, *, f=1):\n    pass\n"
                     "def _many(a, *args, **kwargs):\n    pass\n"
                     "def _varied(a, b, c, d, *args, **kwargs):\n    pass\n"
                     "def public(a, b, c, d, e, f, g):\n    pass\n"
                     "def __init__(self, a, b, c, d, e, f):\n    pass\n")
    assert crowded_helpers(tree) == ["_six (line 3): 6 parameters",
                                     "_varied (line 7): 6 parameters"]
