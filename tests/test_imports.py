"""The package's import graph has no cycle, and data flows one way through its folders.

The graph is read from the source (ast): every import a module makes, anywhere in it: at
module level, under `if TYPE_CHECKING:`, and inside function bodies. A lazy import that closes
a circle still makes two modules that need each other, so it counts.

The layers, bottom to top (a module may import its own layer or those below, never above):

    utils  <  models.config  <  catalogue  <  models  <  heads  <  weights  <  factory
           <  export, conformance  <  cli, the package's public face (__init__, __main__)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minidino"

# Module-name prefixes by layer, bottom first; the first matching prefix in this order wins.
LAYERS: list[tuple[str, ...]] = [
    ("minidino.utils",),
    ("minidino.models.config",),
    ("minidino.catalogue",),
    ("minidino.models",),
    ("minidino.heads",),
    ("minidino.weights",),
    ("minidino.factory",),
    ("minidino.export", "minidino.conformance"),
    ("minidino.cli", "minidino.__main__", "minidino"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _all_imports(tree: ast.Module):
    """Every import statement of a module, wherever it stands (module level, if/try/with, functions, classes)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name imported from a package counts as its
    submodule when one of that name exists, else as the package's __init__)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in _all_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import minidino.x.y`: the deepest package module named
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def layer_of(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {n}" for m, targets in graph.items() for n in targets if layer_of(n) > layer_of(m))


def test_the_checkers_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward_imports({"minidino.models.layers": {"minidino.weights.load"}, "minidino.weights.load": set()}) == \
        ["minidino.models.layers -> minidino.weights.load"]


def test_import_graph_sees_the_package_and_the_lazy_imports():
    graph = import_graph()
    assert "minidino.models.dinov2" in graph["minidino"]  # __init__ imports the model
    assert "minidino.models.attention" in graph["minidino.models.backbone"]
    assert "minidino.models.backbone" in graph["minidino.models.dinov3"]
    assert "minidino.factory" in graph["minidino.cli._common"]  # imported inside a function there


def test_no_import_cycle_between_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges (lazy ones included), no cycle" if not cycle else "")
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    assert upward_imports(graph) == []


LONG = 440  # "about 400 lines": past this a module says at its top why it is one file


def long_modules_without_a_reason(root: Path) -> list[str]:
    """Modules over LONG lines whose docstring does not say "Over 400 lines" and why."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LONG and "Over 400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            found.append(f"{path.relative_to(root.parent)}: {text.count(chr(10))} lines")
    return found


def test_a_long_module_says_why(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text('"""A long module."""\n' + "x = 1\n" * (LONG + 1))
    assert long_modules_without_a_reason(tmp_path / "pkg") == ["pkg/long.py: 442 lines"]
    assert long_modules_without_a_reason(PACKAGE) == []
