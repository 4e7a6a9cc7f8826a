"""Print the import graph between churnlens's own modules; exit 1 on a cycle or a wrong arrow.

Reads the source with `ast` (nothing is imported), so it runs without the
project's dependencies: ``python .ci/import_graph.py [--packages] [--root DIR]``. Every
import counts, at the top of a module or inside a function, because an import
moved into a function still makes a cycle, only a hidden one; imports under
``if TYPE_CHECKING:`` are left out (they never run). ``--packages`` prints the
arrows between the top-level packages instead of between modules.

The packages are layers, lowest first (`PACKAGES`): a module may import its own
package and the layers below it, never one above (features knows nothing of
models, models nothing of training or serving).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the layers, lowest first
PACKAGES = ("features", "models", "training", "serving")
TOP_MODULES = ("churnlens",)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name → file, for the project's packages and top-level modules."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    for name in TOP_MODULES:
        if (root / f"{name}.py").exists():
            modules[name] = root / f"{name}.py"
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(child)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports."""
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = _package_of(name, path).split(".")
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # `from training import registry` imports the module training.registry
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            # `import features.pipeline.x` → the longest prefix that is a project module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the project modules it imports."""
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Top-level package → the other top-level packages it imports."""
    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        top = name.split(".")[0]
        out.setdefault(top, set()).update(t.split(".")[0] for t in targets
                                          if t.split(".")[0] != top)
    return out


def wrong_way(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, imported module) pairs where a lower layer imports a higher one."""
    rank = {package: level for level, package in enumerate(PACKAGES)}
    found = []
    for name, targets in graph.items():
        layer = rank.get(name.split(".")[0])
        if layer is None:
            continue  # top-level modules (the command line) compose every layer
        found += [(name, target) for target in targets
                  if rank.get(target.split(".")[0], -1) > layer]
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", action="store_true",
                        help="arrows between the top-level packages instead of modules")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder")
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    shown = package_graph(graph) if args.packages else graph
    for name in sorted(shown):
        print(f"{name} -> {', '.join(sorted(shown[name])) or '(none)'}")
    found = cycles(graph)
    for component in found:
        print(f"cycle between modules: {' <-> '.join(component)}", file=sys.stderr)
    upward = wrong_way(graph)
    for name, target in upward:
        print(f"wrong-way import: {name} imports {target} (layers, lowest first: "
              f"{', '.join(PACKAGES)})", file=sys.stderr)
    if found or upward:
        return 1
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, no cycle, "
          "no wrong-way import", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
