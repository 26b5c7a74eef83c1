"""The layers hold: the library never imports the scripts' helpers (anatomy.cli), its module
graph has no cycle (deferred imports included), and no pipeline imports another pipeline or
the miniworld builder. Read off every import statement with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("anatomy.mia", "anatomy.mixture", "anatomy.memorization", "anatomy.selection",
             "anatomy.contrastive")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "anatomy").rglob("*.py")):
        mod = _module(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("anatomy")}
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("anatomy"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        graph[mod] = deps
    known = set(graph)
    return {m: {d for d in deps if d in known and d != m} for m, deps in graph.items()}


def test_the_library_never_imports_the_cli():
    offenders = [m for m, deps in _imports().items() if "anatomy.cli" in deps
                 and m != "anatomy.cli"]
    assert offenders == []


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d.startswith(m + "."):  # a package importing its own submodule
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_pipelines_import_only_shared_layers():
    bad = []
    for m, deps in _imports().items():
        mine = next((p for p in PIPELINES if m == p or m.startswith(p + ".")), None)
        if mine is None:
            continue
        for d in deps:
            other = next((p for p in PIPELINES if d == p or d.startswith(p + ".")), None)
            if (other is not None and other != mine) or d.startswith("anatomy.world"):
                bad.append((m, d))
    assert bad == []


def test_the_shared_cli_holds_no_pipeline_e_options():
    """Pipeline E's flags live with pipeline E (anatomy.contrastive.flags): the shared
    plumbing imports nothing of it."""
    assert not [d for d in _imports()["anatomy.cli"] if d.startswith("anatomy.contrastive")]
