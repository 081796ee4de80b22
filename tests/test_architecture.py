"""The package's shape (docs/architecture.md): layers, no cycles, short functions, thin __init__ files,
and a `mlreassess --help` that imports neither torch nor numpy."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlreassess"

# Lower layers never import higher ones; a package may import itself.
LAYERS = {
    "errors": 0, "constants": 0,
    "results": 1, "io": 1, "progress": 1, "locks": 1, "cpus": 1, "provenance": 1,
    "options": 2,
    "datasets": 3,
    "patchml": 4, "metrics": 4,
    "inference": 5,
    "report": 6,
    "config": 7,
    "pipeline": 8,
    "demo": 9, "api": 9,
    "cli": 10,
    "__main__": 11,
}
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("mlreassess",) + tuple(p for p in parts if p != "__init__"))
        out[name] = (path, ast.parse(path.read_text()))
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(imported mlreassess module, line, inside a function) for every import in the tree."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("mlreassess"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("mlreassess"):
                found.extend(_from_targets(child, in_function))
            visit(child, inner)

    def _from_targets(node, in_function):
        # `from mlreassess.x import y` imports the module mlreassess.x.y where there is one
        names = [f"{node.module}.{a.name}" for a in node.names]
        targets = [n for n in names if n in MODULE_NAMES] or [node.module]
        return [(t, node.lineno, in_function) for t in targets]

    visit(tree, False)
    return found


MODULES = _modules()
MODULE_NAMES = set(MODULES)


def test_every_module_has_a_layer():
    tops = {_top(m) for m in MODULES} - {""}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS and docs/architecture.md: {tops - set(LAYERS)}"


def test_no_import_runs_up_the_layers():
    bad = []
    for name, (path, tree) in MODULES.items():
        here = _top(name)
        for target, line, _ in _imports(tree):
            there = _top(target)
            if there and there != here and here and LAYERS[there] >= LAYERS[here]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {here} (layer {LAYERS[here]}) imports {target}")
    assert not bad, "\n".join(bad)


# Inside inference, three places (inference/__init__.py): pixels know no model, models know no sweep.
INFERENCE_PARTS = {"input": 0, "models": 1, "sweep": 2}


def _inference_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "inference" else None


def test_inference_is_input_then_models_then_sweep():
    parts = {_inference_part(m) for m in MODULES if _inference_part(m)}
    assert parts == set(INFERENCE_PARTS), f"every module of inference/ lives in one of {sorted(INFERENCE_PARTS)}"
    bad = []
    for name, (path, tree) in MODULES.items():
        here = _inference_part(name)
        for target, line, _ in _imports(tree):
            there = _inference_part(target)
            if here and there and INFERENCE_PARTS[there] > INFERENCE_PARTS[here]:
                bad.append(f"{path.relative_to(SRC)}:{line}: inference/{here} imports {target}")
    assert not bad, "\n".join(bad)


def test_only_cli_imports_cli():
    bad = [
        f"{path.relative_to(SRC)}:{line}"
        for name, (path, tree) in MODULES.items()
        if _top(name) not in ("cli", "__main__")
        for target, line, _ in _imports(tree)
        if _top(target) == "cli"
    ]
    assert not bad


def test_no_import_cycles_between_modules():
    graph = {name: {t for t, _, _ in _imports(tree) if t in MODULES and t != name} for name, (_, tree) in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path, tree in MODULES.values()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


def test_init_files_only_re_export():
    for path, tree in MODULES.values():
        if path.name != "__init__.py":
            continue
        for node in tree.body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # docstring
            ) or (
                isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in node.targets)
            )
            assert ok, f"{path.relative_to(SRC)}:{node.lineno}: logic in an __init__ file"


def test_function_local_imports_say_why():
    """A function-local import is allowed only with a comment saying why (e.g. keeping --help fast)."""
    bad = []
    for path, tree in MODULES.values():
        lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    above = lines[sub.lineno - 2] if sub.lineno >= 2 else ""
                    block = [ln.strip() for ln in lines[node.lineno - 1 : sub.lineno]]
                    if "#" not in lines[sub.lineno - 1] and not any(ln.startswith("#") for ln in block) and "#" not in above:
                        bad.append(f"{path.relative_to(SRC)}:{sub.lineno}")
    assert not bad, "function-local imports without a reason:\n" + "\n".join(bad)


def test_help_imports_neither_torch_nor_numpy():
    code = (
        "import sys\nfrom mlreassess.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'pyarrow', 'timm', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_help_is_fast():
    best = float("inf")
    for _ in range(5):  # the best of five: a shared machine's noise only ever adds time
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlreassess", "--help"], capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"mlreassess --help took {best:.2f} s"
