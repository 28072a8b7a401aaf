"""No import cycles between the modules of the package and of the scorer, lazy imports inside functions included.

The graph is read from the source with ``ast`` (every ``import`` statement anywhere in a module, also in
functions, ``if TYPE_CHECKING:`` blocks and ``__main__`` guards), so a cycle that only a late import hides at run
time is still found. Modules point down the data flow (cli -> infer -> stages -> io), never back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"efficientcellseg": REPO / "SW" / "efficientcellseg", "evaluation": REPO / "evaluation"}


def _module_name(package: str, path: Path) -> str:
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the same packages it imports (anywhere in its source)."""
    modules = {_module_name(pkg, p): p for pkg, root in PACKAGES.items() for p in sorted(root.glob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = f"{package}.{base}" if base else package
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)  # "from pkg import module"
        graph[name] = {t for t in targets if t in modules and t != name and not name.endswith("__main__")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_finder_sees_lazy_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "efficientcellseg.infer" in graph and "evaluation.ctc_seg" in graph
    assert "efficientcellseg.onnx_backend" in graph["efficientcellseg.infer"]  # a lazy import is an edge too
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_inference_never_imports_the_data_generator() -> None:
    """Inference (int8 calibration included) works on the user's data only: no path leads to ``synth``."""
    graph = import_graph()
    for mod in ("onnx_backend", "infer", "postprocess", "pseudocolor", "ctc_io", "tiling", "preprocess"):
        assert "efficientcellseg.synth" not in reachable(graph, f"efficientcellseg.{mod}"), mod
