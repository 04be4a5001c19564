"""The shape of the code base (docs/ARCHITECTURE.md): short functions, no import cycle, one-way layers, and a
command line that starts without torch.

Static checks read `src/ldsr` with `ast` (nothing is imported); only the last test starts a subprocess.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ldsr"
MAX_FUNCTION_LINES = 80

# The one-way flow io -> data -> models / diffusion -> training / pipeline -> study / evaluation -> cli: a module
# may import its own layer or a lower one at module level. `assets` is package data (torch-free, imports no ldsr
# module); `__main__` is the `python -m ldsr` entry point of the CLI.
LAYERS: dict[str, int] = {
    "assets": 0,
    "io": 0,
    "data": 1,
    "models": 2,
    "diffusion": 2,
    "training": 3,
    "pipeline": 3,
    "study": 4,
    "evaluation": 4,
    "cli": 5,
    "__main__": 5,
}
ANYONE = {"ldsr", "ldsr.config"}  # imported by every layer, and bound to none


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the ldsr package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that run when the module is imported: the module body, class bodies and the branches of
    `if` / `try` / `with` at that level; not function bodies and not `if TYPE_CHECKING:` blocks."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        out.append(node)
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _import_time_statements(node.body)
            out += _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                out += _import_time_statements(block)
        elif isinstance(node, (ast.ClassDef, ast.With)):
            out += _import_time_statements(node.body)
    return out


def _module_level_imports(name: str, path: Path) -> set[str]:
    """The ldsr modules `name` imports at module level (`from pkg import sub` counts as the module pkg.sub)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y / from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _module_level_imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return None if module in ANYONE else LAYERS.get(parts[1] if len(parts) > 1 else "", -1)


def test_no_function_longer_than_80_lines() -> None:
    too_long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1  # from `def` (decorators not counted)
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_import_graph_is_read() -> None:
    """The graph sees absolute, `from pkg import module` and relative imports, and skips the lazy ones."""
    assert "ldsr.training.config" in GRAPH["ldsr.config"]  # from ldsr.training.config import TrainConfig
    assert "ldsr.models.checkpoint" in GRAPH["ldsr.training.loop"]  # from ldsr.models import checkpoint as ck
    assert "ldsr.models.baselines.esrgan" in GRAPH["ldsr.models.baselines"]  # from .esrgan import ...
    assert "ldsr.data.datasets" not in GRAPH["ldsr.training.loop"]  # imported inside _setup only
    assert "ldsr.config" not in GRAPH["ldsr.models.build"]  # under `if TYPE_CHECKING:` only


def test_every_module_has_a_layer() -> None:
    unknown = sorted(m for m in MODULES if _layer(m) == -1)
    assert not unknown, f"modules outside the layers of test_architecture.LAYERS: {unknown}"


def test_layers_import_only_downwards() -> None:
    upward = []
    for m, targets in GRAPH.items():
        for t in sorted(targets):
            lm, lt = _layer(m), _layer(t)
            if lm is not None and lt is not None and lt > lm:
                upward.append(f"{m} (layer {lm}) imports {t} (layer {lt})")
    assert not upward, "module-level imports against the one-way flow:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "module-level import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cli_starts_without_torch() -> None:
    """`import ldsr.cli` loads no torch, and `ldsr --help` (the same app) prints its usage and exits 0."""
    code = (
        "import sys\n"
        "import ldsr.cli\n"
        "print('torch loaded:', 'torch' in sys.modules, flush=True)\n"
        "sys.argv = ['ldsr', '--help']\n"
        "ldsr.cli.app(prog_name='ldsr')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch loaded: False" in proc.stdout
    assert "Usage: ldsr" in proc.stdout and "upscale" in proc.stdout
