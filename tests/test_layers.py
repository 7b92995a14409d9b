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


# Where an import inside a function has a reason: the command line imports what a command needs when it runs, so
# `alignkit --help` starts in a tenth of a second; the judge factory imports a model-backed judge when it is named,
# so a rule judge needs no torch. Elsewhere a module's own imports stand at its top; a third-party package may be
# imported where it is used (an optional extra: peft, wandb, matplotlib, gguf, datasets...; or a heavy library a
# path seldom takes).
LAZY_ALLOWED = {"alignkit/cli", "alignkit/judges/factory.py"}


def test_a_module_imports_its_own_and_the_standard_library_at_its_top():
    import sys

    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE.parent))
        if any(where.startswith(allowed) for allowed in LAZY_ALLOWED):
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    names = ["." if node.level else (node.module or "")]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any(n == "." or n.split(".")[0] in ("alignkit", *sys.stdlib_module_names) for n in names):
                    late.append(f"{where}:{node.lineno} in {fn.name}()")
    assert not late, "imports inside functions that belong at the module's top (tests/test_layers.py says when " \
                     "one may stay):\n" + "\n".join(late)
