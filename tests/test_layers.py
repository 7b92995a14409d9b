"""The layout docs/architecture.md describes, held against the code's imports (module-level and inside functions):
no import runs up a layer, no two modules import each other through any chain, and no file grows past 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "alignkit"

# Highest first (docs/architecture.md): a folder may import its own layer's folders and any below, none above.
LAYERS = [("cli",), ("pipelines",), ("methods",), ("train", "constitution"), ("eval",), ("judges", "rollouts"),
          ("data", "models"), ("losses", "tasks", "utils")]
RANK = {folder: rank for rank, folders in enumerate(LAYERS) for folder in folders}
MAX_LINES = 450


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the alignkit modules it imports (a `from pkg import name` of a submodule counts as that module)."""
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found |= {target for target in [base, *(f"{base}.{a.name}" for a in node.names)] if target in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def _folder(module: str) -> str:
    parts = module.split(".")
    return "cli" if parts[1:] == ["cli"] else (parts[1] if len(parts) > 1 else "")


def test_no_import_runs_up_a_layer():
    up = sorted(f"{source} -> {target}" for source, targets in _imports().items() for target in targets
                if _folder(source) in RANK and _folder(target) in RANK and RANK[_folder(target)] < RANK[_folder(source)])
    assert not up, "imports up a layer (docs/architecture.md):\n" + "\n".join(up)
    assert set(RANK) | {"__init__", "__main__"} >= {_folder(m) for m in _imports() if "." in m} - {""}, \
        "a folder the layers do not name"


def test_no_import_cycle():
    graph, cycles = _imports(), []
    for start in graph:  # a path from a module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_no_file_is_longer_than_450_lines():
    long = sorted(f"{path.relative_to(PACKAGE.parent)}: {n}" for path in PACKAGE.rglob("*.py")
                  if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert not long, f"files over {MAX_LINES} lines (split them by what they do):\n" + "\n".join(long)
