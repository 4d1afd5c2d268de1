"""The package's layering: lower layers never import higher ones, no import cycles,
workflow scripts use only public names, modules stay short (issue: one package per layer).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "rmtlens"
SCRIPTS = ROOT / "workflow" / "scripts"

# Layer of each top-level part of the package, bottom first.
LAYERS = {
    "rmtlens._lazy": 0,
    "rmtlens.io": 0,
    "rmtlens.inputs": 1,
    "rmtlens.kernels": 2,
    "rmtlens.estimators": 3,
    "rmtlens.studies": 4,
    "rmtlens.report": 5,
    "rmtlens.workflow": 6,
    "rmtlens": 7,  # the top-level __init__ may re-export anything
}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def imported_modules(path: Path, *, toplevel_only: bool) -> set[str]:
    """rmtlens modules imported by a file (``from x import y`` counts ``x.y`` when it is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if toplevel_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rmtlens")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rmtlens"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                found.add(candidate if is_module else node.module)
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    stray = [m for m in package_modules() if m != "rmtlens" and max(
        (k for k in LAYERS if m == k or m.startswith(k + ".")), key=len) == "rmtlens"]
    assert not stray, f"modules outside the layer packages: {stray}"


def test_no_upward_imports():
    upward = []
    for name, path in package_modules().items():
        for target in imported_modules(path, toplevel_only=False):
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_detects_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    modules = package_modules()
    # a package's lazy __init__ imports nothing at module level, so function-level
    # imports count too: a cycle through a deferred import is still a cycle
    graph = {
        name: {t for t in imported_modules(path, toplevel_only=False) if t in modules and t != name}
        for name, path in modules.items()
    }
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_scripts_import_only_public_package_names():
    offenders = []
    for script in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rmtlens"):
                package = importlib.import_module(node.module)
                public = set(getattr(package, "__all__", ()))
                for alias in node.names:
                    if node.module.count(".") > 1 or (alias.name not in public and node.module != "rmtlens.io"):
                        offenders.append(f"{script.name}: from {node.module} import {alias.name}")
                    elif alias.name.startswith("_"):
                        offenders.append(f"{script.name}: private {alias.name}")
    assert not offenders, "scripts reach past the public names:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", [k for k in LAYERS if k not in ("rmtlens", "rmtlens.io", "rmtlens._lazy")])
def test_public_names_resolve(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_modules_are_short_or_say_why():
    long = []
    for name, path in package_modules().items():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "Longer than" not in doc:
            long.append(f"{name}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines without a 'Longer than ...' sentence: {long}"


NTK = PACKAGE / "kernels" / "ntk"


def private_cross_imports(source: str, module: str) -> list[str]:
    """Private names (``_x``) of other rmtlens modules that ``source`` (module ``module``)
    imports, or reads off an imported rmtlens module (``plan._make_plan``)."""
    found, aliases = [], {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rmtlens") and a.name != module:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rmtlens"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").exists()
                if is_module and full != module:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and node.module != module:
                    found.append(full)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_private_import_check_catches_planted_imports():
    own = "rmtlens.kernels.ntk.pieces"
    assert private_cross_imports("from rmtlens.kernels.ntk.plan import Plan, _Plan\n", own) == [
        "rmtlens.kernels.ntk.plan._Plan"]
    assert private_cross_imports("from rmtlens.kernels.ntk import plan\nplan._make_plan(1)\n", own) == [
        "rmtlens.kernels.ntk.plan._make_plan"]
    assert private_cross_imports("from rmtlens.kernels.ntk.pieces import _form\n", own) == []  # its own
    assert private_cross_imports("from rmtlens.kernels.ntk.plan import make_plan\n", own) == []


def test_engine_steps_share_only_public_names():
    """The modules of kernels/ntk hand each other results through public interfaces:
    none imports (or reads off a sibling module) another module's private name."""
    offenders = []
    for path in sorted(NTK.glob("*.py")):
        name = module_name(path)
        offenders += [f"{name}: {hit}" for hit in private_cross_imports(path.read_text(), name)]
    assert not offenders, "private names across kernels/ntk modules:\n" + "\n".join(offenders)
