"""The package's imports point one way (CONTRIBUTING): no module imports, directly or through others, a module that
imports it back. Function-level imports count too: they are arrows all the same, only later."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "a2i_utils"
PARTS = ("data", "transformer", "imagebind", "soundiff", "evaluation")
SHARED = ("config", "io", "checkpoints", "devices", "plotting", "compat", "memory", "downloads")


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``{"a2i_utils.x.y": path}`` of every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from the source (every ``import`` anywhere in the file)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, level - 1 levels up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_shared_modules_import_no_part():
    graph = import_graph()
    for name in SHARED:
        module = f"a2i_utils.{name}"
        parts = sorted(t for t in graph[module] if t.split(".")[1] in PARTS)
        assert not parts, f"{module} (shared) imports the parts {parts}"


def test_the_scan_finds_a_cycle_and_relative_imports(tmp_path):
    """The checker itself: a circle through a function-level and a relative import is found, a chain is not."""
    pkg = tmp_path / "a2i_utils"
    (pkg / "part").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "part" / "__init__.py").write_text("")
    (pkg / "part" / "loader.py").write_text("def load():\n    from a2i_utils.part import model\n")
    (pkg / "part" / "model.py").write_text("from . import base\n")
    (pkg / "part" / "base.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "part" / "base.py").write_text("def f():\n    from .loader import load\n")
    assert find_cycle(import_graph(pkg)) == ["a2i_utils.part.base", "a2i_utils.part.loader", "a2i_utils.part.model",
                                             "a2i_utils.part.base"]
