"""The package's layering: lower layers never import higher ones, no import cycles,
workflow scripts use only public names, modules stay short (issue: one package per layer).
"""

from __future__ import annotations

import ast
import functools
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


def is_module(name: str) -> bool:
    """Whether ``name`` (dotted, ``rmtlens.…``) is a module or package of the source tree."""
    base = PACKAGE.parent / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def absolute_module(node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
    """The absolute module a ``from … import`` names, relative forms (``from ..workflow``,
    ``from . import x``) resolved against module ``name`` (a package when ``is_package``)."""
    if node.level == 0:
        return node.module
    parts = name.split(".") if is_package else name.split(".")[:-1]
    if node.level - 1 > len(parts) - 1:
        raise ValueError(f"{name}: relative import beyond the top-level package (level {node.level})")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def lazy_exports_of(tree: ast.Module, name: str) -> dict[str, str] | None:
    """``{public name: absolute module}`` of a package ``__init__`` that calls
    ``rmtlens._lazy.lazy_exports`` (module strings relative to the package or ``rmtlens.…``,
    as ``_lazy`` resolves them); ``None`` when it calls none. The mapping must be a dict
    literal, passed directly or through a module-level name, so it can be checked unimported."""
    literals = {
        target.id: stmt.value
        for stmt in tree.body if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict)
        for target in stmt.targets if isinstance(target, ast.Name)
    }
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "lazy_exports"]
    if not calls:
        return None
    exports: dict[str, str] = {}
    for call in calls:
        arg = call.args[1] if len(call.args) > 1 else None
        arg = literals.get(arg.id) if isinstance(arg, ast.Name) else arg
        if not isinstance(arg, ast.Dict):
            raise ValueError(f"{name}: lazy_exports needs a dict literal of name -> module strings")
        for key, value in ast.literal_eval(arg).items():
            exports[key] = value if value.startswith("rmtlens.") else f"{name}.{value}"
    return exports


@functools.lru_cache(maxsize=None)
def package_exports(module: str) -> dict[str, str]:
    """The lazy exports of ``module`` when it is a package of the source tree, else ``{}``."""
    init = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    return (lazy_exports_of(ast.parse(init.read_text()), module) or {}) if init.exists() else {}


def source_imports(source: str, name: str, is_package: bool, *, toplevel_only: bool) -> set[str]:
    """rmtlens modules a module's source imports: absolute and relative imports (``from x
    import y`` counts ``x.y`` when it is a module), and, in a package ``__init__``, the
    modules its lazy-export strings name (imported on first use of a public name)."""
    tree = ast.parse(source)
    nodes = tree.body if toplevel_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rmtlens")}
        elif isinstance(node, ast.ImportFrom):
            module = absolute_module(node, name, is_package)
            if not (module and module.startswith("rmtlens")):
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                # a lazy package's public name imports the module that defines it, not the others
                found.add(candidate if is_module(candidate) else package_exports(module).get(alias.name, module))
    if is_package:
        found |= set((lazy_exports_of(tree, name) or {}).values())
    return found


def imported_modules(path: Path, *, toplevel_only: bool) -> set[str]:
    """:func:`source_imports` of a file of the package."""
    return source_imports(path.read_text(), module_name(path), path.name == "__init__.py", toplevel_only=toplevel_only)


def upward(name: str, targets: set[str]) -> list[str]:
    """The imports of module ``name`` that reach a higher layer."""
    return [f"{name} (layer {layer_of(name)}) imports {t} (layer {layer_of(t)})"
            for t in sorted(targets) if layer_of(t) > layer_of(name)]


def defined_names(module: str) -> set[str]:
    """Names bound at the top level of a module of the source tree (definitions, assignments,
    imports, also inside top-level ``if``/``try``), plus a package's lazy exports."""
    base = PACKAGE.parent / module.replace(".", "/")
    path = base / "__init__.py" if (base / "__init__.py").exists() else base.with_suffix(".py")
    tree = ast.parse(path.read_text())
    names: set[str] = set(lazy_exports_of(tree, module) or ())
    stack = list(tree.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
        elif isinstance(stmt, (ast.If, ast.Try)):
            stack += stmt.body + stmt.orelse + getattr(stmt, "finalbody", []) + [
                s for h in getattr(stmt, "handlers", []) for s in h.body]
    return names


def lazy_export_problems(package: str, exports: dict[str, str]) -> list[str]:
    """Lazy exports of ``package`` that do not resolve (no such module, or the module does not
    define the name) or that reach a higher layer."""
    problems = []
    for public, module in sorted(exports.items()):
        if not is_module(module):
            problems.append(f"{package}: {public!r} -> {module}: no such module")
        elif public not in defined_names(module):
            problems.append(f"{package}: {public!r} -> {module}: the module does not define it")
    return problems + upward(package, set(exports.values()))


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    stray = [m for m in package_modules() if m != "rmtlens" and max(
        (k for k in LAYERS if m == k or m.startswith(k + ".")), key=len) == "rmtlens"]
    assert not stray, f"modules outside the layer packages: {stray}"


def test_no_upward_imports():
    found = []
    for name, path in package_modules().items():
        found += upward(name, imported_modules(path, toplevel_only=False))
    assert not found, "upward imports:\n" + "\n".join(found)


@pytest.mark.parametrize("name, is_package, source, expected", [
    ("rmtlens.estimators.planted", False, "from ..workflow import jobs", {"rmtlens.workflow.jobs"}),
    ("rmtlens.estimators.planted", False, "from ..studies.noise import noise_rows", {"rmtlens.studies.noise"}),
    ("rmtlens.estimators.planted", False, "def f():\n    from ..report import tables", {"rmtlens.report.tables"}),
    ("rmtlens.estimators.planted", False, "from rmtlens.studies import noise_rows", {"rmtlens.studies.noise"}),
    ("rmtlens.estimators", True, "from ..report import tables", {"rmtlens.report.tables"}),
    ("rmtlens.estimators", True, "from rmtlens._lazy import lazy_exports\n"
     "_EXPORTS = {'x': 'rmtlens.workflow.jobs'}\n__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)",
     {"rmtlens._lazy", "rmtlens.workflow.jobs"}),
])
def test_planted_relative_and_lazy_upward_imports_are_found(name, is_package, source, expected):
    """Relative imports and lazy-export strings resolve to the modules they name, and an
    upward one is reported (both once passed unseen)."""
    found = source_imports(source, name, is_package, toplevel_only=False)
    assert found == expected
    assert upward(name, found), found


@pytest.mark.parametrize("name, is_package, source, expected", [
    ("rmtlens.estimators.planted", False, "from . import ridge\nfrom .grids import kernel_scale",
     {"rmtlens.estimators.ridge", "rmtlens.estimators.grids"}),
    ("rmtlens.estimators", True, "from . import ridge", {"rmtlens.estimators.ridge"}),
    ("rmtlens.estimators.planted", False, "from .. import io\nfrom ..inputs import targets",
     {"rmtlens.io", "rmtlens.inputs.targets"}),
])
def test_planted_relative_imports_within_or_below_the_layer_pass(name, is_package, source, expected):
    found = source_imports(source, name, is_package, toplevel_only=False)
    assert found == expected and not upward(name, found)


def test_every_lazy_export_resolves_and_obeys_the_layering():
    """Each package ``__init__``'s lazy-export strings name an existing module of the same or
    a lower layer that defines the name, read from the sources (nothing imported)."""
    checked, problems = 0, []
    for name, path in package_modules().items():
        if path.name == "__init__.py":
            exports = lazy_exports_of(ast.parse(path.read_text()), name)
            if exports:
                checked += len(exports)
                problems += lazy_export_problems(name, exports)
    assert checked > 100, checked
    assert not problems, "lazy exports:\n" + "\n".join(problems)


def test_planted_lazy_export_violations_are_found():
    good = {"ridge_path": "rmtlens.estimators.ridge", "kernel_scale": "rmtlens.estimators.grids"}
    assert lazy_export_problems("rmtlens.estimators", good) == []
    planted = {
        "ridge_path": "rmtlens.estimators.no_such_module",
        "not_defined_there": "rmtlens.estimators.grids",
        "noise_rows": "rmtlens.studies.noise",  # exists, but one layer up
    }
    problems = lazy_export_problems("rmtlens.estimators", planted)
    assert len(problems) == 3, problems
    assert any("no such module" in p for p in problems) and any("does not define" in p for p in problems)
    assert any("imports rmtlens.studies.noise" in p for p in problems)
    source = "from rmtlens._lazy import lazy_exports\n__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)"
    with pytest.raises(ValueError, match="dict literal"):
        source_imports(source, "rmtlens.estimators", True, toplevel_only=False)


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
