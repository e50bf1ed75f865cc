"""The package's layers, checked from its imports: stages above index above storage, no cycles.

Function-level (lazy) imports count too: a cycle hidden in a function is still a cycle for a reader.
Imports under ``if TYPE_CHECKING:`` do not: they name types for annotations and run nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# Lower layers first; a module may import from its own layer and those before it.
LAYERS = [
    {"rankstack._version", "rankstack._memory", "rankstack._optional", "rankstack.errors", "rankstack.types",
     "rankstack.ids", "rankstack._bounded", "rankstack.ranking", "rankstack.text", "rankstack.io",
     "rankstack._console", "rankstack._cache_dir"},
    {"rankstack.models"},  # encoders and rerankers: what the index's vectors and the stages run on
    {"rankstack.index"},
    {"rankstack.stages", "rankstack.evaluate", "rankstack.testing"},
    {"rankstack.train", "rankstack.distributed", "rankstack.serve", "rankstack.demo"},
    {"rankstack.cli", "rankstack"},
]
# The stage registry imports the stages so that their names are known; they import it to register.
ALLOWED_CYCLE_PREFIX = "rankstack.stages."


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "rankstack").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankstack"):
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            found = next((t for t in targets if t in modules and t != name), None)
            if found:
                graph[name].add(found)
    return graph


def _layer(module: str) -> int:
    """The layer of the longest matching root ("rankstack" itself matches only the package's __init__)."""
    matches = [(len(root), position) for position, layer in enumerate(LAYERS) for root in layer
               if module == root or (root != "rankstack" and module.startswith(root + "."))]
    return max(matches)[1] if matches else -1


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_but_the_stage_registrys() -> None:
    cycles = _cycles(_graph())
    assert all(all(m.startswith(ALLOWED_CYCLE_PREFIX) for m in cycle) for cycle in cycles), cycles


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    graph = _graph()
    unplaced = sorted(m for m in graph if _layer(m) < 0)
    assert not unplaced, f"modules in no layer: {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if _layer(t) > _layer(m))
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_modules_and_functions_stay_small() -> None:
    # A newcomer reads one job per module and one step per function (limits of the renovation issue).
    too_long = []
    for path in (SRC / "rankstack").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            too_long.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
