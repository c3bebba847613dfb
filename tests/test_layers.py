"""The package's layering as ARCHITECTURE.md's table states it: each module imports only from its own layer or the
layers above it, and the package's imports have no cycle. Read from the sources' syntax trees (function-level
imports included), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import upocr_hf

PACKAGE = Path(upocr_hf.__file__).parent
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_table() -> dict[str, int]:
    """Each package module (or sub-package) named in the table → its layer's rank (0 = top)."""
    section = ARCHITECTURE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    ranks = {}
    for rank, row in enumerate(rows):
        layer, modules = (cell.strip() for cell in row.strip("|").split("|")[:2])
        if layer == "outside the package":
            continue
        for token in re.findall(r"`([\w/]+(?:\.py|/))`", modules):
            ranks["upocr_hf." + token.removesuffix(".py").rstrip("/").replace("/", ".")] = rank
    return ranks


def imports(path: Path) -> set[str]:
    """The upocr_hf modules `path` imports, anywhere in it, as absolute dotted names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
            found |= {name for name in names if name.startswith("upocr_hf")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("upocr_hf")}
    return found


def owner(name: str, ranks: dict[str, int]) -> str | None:
    """The table entry a dotted name belongs to (the longest named prefix), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in ranks:
            return ".".join(parts[:end])
    return None


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "default_model" not in p.parts)


def test_every_package_module_has_a_layer():
    ranks = layer_table()
    unplaced = [module_name(p) for p in package_modules() if p.name != "__init__.py" or p.parent != PACKAGE]
    assert [name for name in unplaced if owner(name, ranks) is None] == []


def test_modules_import_only_from_their_layer_or_above():
    ranks = layer_table()
    upward = []
    for path in package_modules():
        if path == PACKAGE / "__init__.py":
            continue  # the package's front door re-exports every layer
        source = owner(module_name(path), ranks)
        for target in imports(path):
            entry = owner(target, ranks)
            if entry is not None and ranks[entry] > ranks[source]:
                upward.append(f"{module_name(path)} imports {target}")
    assert upward == []


def test_the_package_imports_have_no_cycle():
    """Edges to a package's `__init__` count (the package's front door imports `hub` and the model), except a
    module's import of its own package when that package's `__init__` re-exports the module: Python's usual
    package pattern, which works because the `__init__` runs first."""
    modules = {module_name(p): p for p in package_modules()}
    imported = {name: imports(path) for name, path in modules.items()}
    graph = {}
    for name in modules:
        targets = {target if target in modules else target.rsplit(".", 1)[0] for target in imported[name]}
        graph[name] = {
            target
            for target in targets & modules.keys()
            if not (name.startswith(target + ".") and any(t.startswith(name) for t in imported[target]))
        } - {name}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
