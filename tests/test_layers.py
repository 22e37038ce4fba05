"""The layering holds over the whole tree, as an import graph read from the source (every import:
at module level, under TYPE_CHECKING, inside a function):

- every module of `shared/` belongs to a layer, and imports only go down: a module imports from a
  layer below its own, or from its own package; two packages on one level (`shared.auth` and
  `shared.storage`, `extensions` and `ingestion`) do not import each other;
- no module imports another package's private modules (a name starting with `_`), only its
  public surface; the tests are white-box by design and are not held to this;
- no import cycle between modules;
- an import inside a function says why it is deferred, on its own line (a comment); `manage.py`
  is the exception: it starts on any `python3` with the standard library only and re-runs itself
  inside `.venv`, so every import beyond the standard library is deferred there by design.

The rules are checked on the tree as it is, and each is also shown to catch a broken copy."""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"tests", "node_modules", ".venv", ".local", "docs", "agent", "connector", "infra"}

LAYERS: dict[str, int] = {
    "shared.runtime": 0,
    "shared.contract": 1,
    "shared.settings": 2,
    "shared.auth": 3,
    "shared.storage": 3,
    "shared.documents": 4,
    "shared.http": 5,
    "extensions": 6,
    "ingestion": 6,
    "chat": 7,
    "function_app": 8,
    "devhost": 0,  # the dev host plays the Functions host: it knows nothing of the app
    "tools": 9,
    "devhost.preview_routes": 10,  # the preview's routes: the product's glue for the dev host
    "bench": 11,
    "manage": 12,
}
"""Where each module sits, by its longest listed prefix (a higher number is a higher layer)."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    commented: bool


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def tree(root: Path) -> dict[str, Path]:
    """Every module of the product (everything but the tests and generated folders)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        if not SKIP.intersection(path.relative_to(root).parts):
            found[module_name(path, root)] = path
    return found


def imports(modules: dict[str, Path]) -> list[Import]:
    out = []
    for name, path in modules.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        parsed = ast.parse("\n".join(lines), str(path))
        in_function = {
            id(node)
            for fn in ast.walk(parsed)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn)
        }
        for node in ast.walk(parsed):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.append(submodule if submodule in modules else node.module)
            for target in targets:  # every import: the deferred-import rule holds for all
                out.append(Import(name, target, node.lineno, id(node) in in_function, "#" in lines[node.lineno - 1]))
    return out


def layer(module: str) -> tuple[str, int] | None:
    if module == "shared":  # the package's own __init__: its docstring draws the layers
        return "shared", LAYERS["shared.http"]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:  # a module of shared/ outside every listed package belongs to none
            return prefix, LAYERS[prefix]
    return None


def problems(root: Path = ROOT) -> list[str]:
    modules = tree(root)
    found = imports(modules)
    out = []
    for name in modules:
        if layer(name) is None:
            out.append(f"{name} belongs to no layer")
    ours = {name.split(".")[0] for name in modules}
    for imp in found:
        if imp.in_function and not imp.commented and imp.importer != "manage":
            out.append(f"{imp.importer}:{imp.line} imports {imp.imported} inside a function without saying why")
        here, there = layer(imp.importer), layer(imp.imported)
        if here is None or there is None or imp.imported.split(".")[0] not in ours:
            continue
        if here[0] != there[0] and there[1] >= here[1]:
            out.append(f"{imp.importer}:{imp.line} imports {imp.imported}, a layer above or beside its own")
        private = [i for i, part in enumerate(imp.imported.split(".")) if part.startswith("_")]
        if private:
            package = ".".join(imp.imported.split(".")[: private[0]])
            if not (imp.importer == package or imp.importer.startswith(package + ".")):
                out.append(f"{imp.importer}:{imp.line} imports the private module {imp.imported}")
    out += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(found, modules)]
    return out


def cycles(found: list[Import], modules: dict[str, Path]) -> list[list[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in found:
        if imp.imported in modules and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    seen: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                out.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        on_stack.discard(node)

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    return out


def test_the_tree_is_layered() -> None:
    assert problems() == []


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*SKIP, ".git", "__pycache__", "*.png", "*.json", "*.md"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_each_rule_catches_a_broken_copy(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    # an upward import: the wire layer reaching into storage
    _edit(
        copy / "shared" / "contract" / "_items.py",
        "from shared.runtime import logger\n",
        "from shared.runtime import logger\nfrom shared.storage import Scope\n",
    )
    # a sibling import: storage reaching into auth
    _edit(
        copy / "shared" / "storage" / "_gate.py",
        "from shared.runtime",
        "from shared.auth import Principal\nfrom shared.runtime",
    )
    # a private module from outside its package
    _edit(
        copy / "chat" / "tools.py",
        "from shared.http import",
        "from shared.storage._names import fold\nfrom shared.http import",
    )
    # an unexplained deferred import
    _edit(
        copy / "shared" / "contract" / "normalize.py",
        "def is_guid(value: str) -> bool:\n",
        "def is_guid(value: str) -> bool:\n    import os\n",
    )
    # a cycle
    _edit(
        copy / "shared" / "storage" / "_store.py",
        "from shared.storage._gate",
        "from shared.storage._names import fold\nfrom shared.storage._gate",
    )
    # a module in no layer
    (copy / "shared" / "misc.py").write_text('"""A flat module."""\n')
    found = problems(copy)
    assert any("shared.contract._items:" in p and "imports shared.storage, a layer above" in p for p in found)
    assert any("shared.storage._gate:" in p and "imports shared.auth, a layer above or beside" in p for p in found)
    assert any(p.startswith("chat.tools:") and "imports the private module shared.storage._names" in p for p in found)
    assert any(
        p.startswith("shared.contract.normalize:") and "inside a function without saying why" in p for p in found
    )
    assert any(
        p.startswith("import cycle:") and "shared.storage._store" in p and "shared.storage._names" in p for p in found
    )
    assert "shared.misc belongs to no layer" in found
