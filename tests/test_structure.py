"""The library's shape: `rag` never imports the UI, has no import cycles, and reads in small modules."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400


def _rag_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / "rag").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, once more if CPython 3.11 raises its thread race ("AST constructor recursion
    depth mismatch", python/cpython#106905): a library thread formatting a traceback parses source
    lines at the same moment. A file that does not parse still fails."""
    source = path.read_text(encoding="utf-8")
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the rag modules it imports anywhere (top level or inside functions)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(_parse(path)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # A submodule reading its own package's __init__ is not a cycle between modules.
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_rag_modules_import_no_cycle() -> None:
    assert _cycles(_import_graph(_rag_modules())) == []


def test_importing_every_rag_module_imports_no_ui_and_no_gradio() -> None:
    names = sorted(_rag_modules())
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:\n"
        "        if 'ray' not in str(e) and 'llama' not in str(e): raise\n"  # optional extras
        "bad = sorted(m for m in sys.modules if m == 'ui' or m.startswith(('ui.', 'gradio')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_rag_module_is_over_the_line_budget() -> None:
    long = {name: n for name, path in _rag_modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these modules by what a reader looks for: {long}"


def test_the_ui_serve_command_is_found_through_its_entry_point() -> None:
    from rag.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--index-dir" in result.output and "Serve the chat UI" in result.output
