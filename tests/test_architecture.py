"""The package structure (docs/ARCHITECTURE.md): the import graph of codemill's own modules, read from their
source, has no cycle; the shared core imports none of the three packages; the trainer does not import
`spark_jobs` and imports without pyspark, so its image needs no JVM."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("codemill", "spark_jobs", "synth", "trainer")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                   else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                # the longest project module the import names (a name inside a module counts as the module)
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["spark_jobs.pipeline"]  # the graph was read, not empty
    assert _cycles(graph) == []


def test_a_cycle_is_detected():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("codemill", ("spark_jobs", "synth", "trainer")),
    ("trainer", ("spark_jobs",)),
])
def test_layering(package, forbidden):
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if m.split(".")[0] == package for d in deps
                 if d.split(".")[0] in forbidden)
    assert bad == [], f"{package} must not import {forbidden}: {bad}"


def test_trainer_modules_import_without_pyspark():
    """Every trainer module imports in a fresh interpreter in which pyspark cannot be imported: the trainer's
    image needs neither pyspark nor a JVM."""
    names = [m for m in _modules() if m.split(".")[0] == "trainer"]
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'pyspark' or name.startswith('pyspark.'):\n"
            "            raise ImportError('pyspark is blocked: the trainer must not need it')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"import importlib\nfor m in {names!r}:\n    importlib.import_module(m)\n"
            "assert not any(k.startswith('pyspark') for k in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
