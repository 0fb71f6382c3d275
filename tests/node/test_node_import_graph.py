"""The layering of ``node/``: its modules import each other without a cycle, and it depends on
torch alone (numpy and the standard library allowed; tqdm only lazily, for the progress bar, and
scipy only lazily, for ``method="scipy_solver"``).

Every ``import`` counts, also those inside functions: a function-level import that dodges an
import-time cycle is still a cycle in the design. The graph is read from the source with ``ast``,
so nothing is imported to build it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "node"
ALLOWED_EXTERNAL = {"torch", "numpy"}
# imported only inside a function of that module
LAZY_ONLY = {"tqdm": "node.progress", "scipy": "node.scipy_solver"}
HEAVY = ("lightning", "hydra", "omegaconf", "matplotlib", "torchdiffeq", "scipy")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path):
    """``(imported module, line, at module level)`` for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top_level, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names = tuple(alias.name for alias in node.names)
            yield base, node.lineno, id(node) in top_level, names


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int, bool]]]:
    """The node-internal import graph and the list of external imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    external = []
    for name, path in modules.items():
        for target, line, top, names in _imports(name, path):
            if target != "node" and not target.startswith("node."):
                external.append((name, target.split(".")[0], line, top))
                continue
            # ``from node.x import y`` imports the submodule node.x.y if there is one.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if subs:
                graph[name].update(subs)
            if len(subs) < len(names) or not names:
                while target not in modules:  # import node.x.attr -> node.x
                    target = target.rsplit(".", 1)[0]
                graph[name].add(target)
        graph[name].discard(name)
    return graph, external


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a closed path), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def test_graph_sees_the_whole_package():
    graph, _ = _graph()
    assert {"node", "node.progress", "node.methods", "node.methods.dopri5"} <= set(graph)
    assert "node.tableau" in graph["node.methods.dopri5"]


def test_find_cycle_reports_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_node_imports_form_no_cycle():
    cycle = _find_cycle(_graph()[0])
    assert cycle is None, "node/ has an import cycle: " + " -> ".join(cycle or [])


def test_engines_never_import_the_public_layer():
    # node.api holds solve/odeint/odeint_adjoint/odeint_event; only the package exports it, and
    # node.config (SolverConfig, built on node.solve) sits on top of it, imported by the package
    # alone.
    graph, _ = _graph()
    importers = sorted(m for m, targets in graph.items() if "node.api" in targets)
    assert importers == ["node", "node.config"], f"modules importing node.api: {importers}"
    importers = sorted(m for m, targets in graph.items() if "node.config" in targets)
    assert importers == ["node"], f"modules importing node.config: {importers}"
    inside = sorted(m for m, targets in graph.items() if "node" in targets)
    assert not inside, f"modules importing the package node itself: {inside}"


def test_node_depends_on_torch_and_the_standard_library_only():
    bad = []
    for module, top, line, at_top in _graph()[1]:
        if top in ALLOWED_EXTERNAL or top in sys.stdlib_module_names:
            continue
        if LAZY_ONLY.get(top) == module and not at_top:
            continue
        bad.append(f"{module}:{line} imports {top}" + (" at module level" if at_top else ""))
    assert not bad, "node/ imports outside torch, numpy, the standard library: " + "; ".join(bad)


def test_import_node_loads_no_application_libraries():
    # (tqdm is not checked here: torch itself imports it when installed; that node imports it
    # only lazily is checked on the source above.)
    code = f"import sys, node; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "", f"import node loaded {out}"
