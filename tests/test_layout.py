"""The layout DESIGN.md promises: minigrad builds upward, and the fast paths sit beside
the reader's path, opted into by training code only (never imported by the maths files)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# minigrad's floors: each module may import the floors below it, never one above.
MINIGRAD_FLOORS = {
    "speed": set(),  # the named speed tricks: numpy only
    "tensor": set(),
    "ops": {"tensor", "speed"},
    "nn": {"tensor", "ops"},
    "optim": {"tensor"},
    "gradcheck": {"tensor"},
    "fused": {"tensor", "ops", "nn", "speed"},  # the optional top floor
    "__init__": {"tensor", "ops", "nn", "optim", "gradcheck"},  # `import minigrad` never loads fused
}
# Imports of a floor above that are used only when a function runs: Tensor's operators name
# the operations of ops (``__add__`` returns ``ops.add(self, other)``), and tensor.py imports
# ops as its last statement. Defining the Tensor and its backward pass needs nothing from ops
# (test_tensor_uses_ops_only_when_an_operator_runs).
CALL_TIME_IMPORTS = {"tensor": {"ops"}}
# flows_np modules allowed to use the fast machinery (minigrad.fused, flows_np.nf_fast, fm_fast).
FAST_PATH_USERS = {"nf_fast", "fm_fast", "train"}


def names_imported(node: ast.AST, package: str) -> set:
    """Absolute names an import statement imports (relative imports resolved against `package`)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        base = package + ("." + base if base else "")
    return {base} | {f"{base}.{alias.name}" for alias in node.names}  # `from . import nf_fast`


def imported_modules(path: Path, package: str) -> set:
    """Absolute names of every module `path` imports (relative imports resolved against `package`)."""
    return set().union(*(names_imported(node, package) for node in ast.walk(ast.parse(path.read_text()))))


def minigrad_floors(names: set) -> set:
    return {name.split(".")[1] for name in names
            if name.startswith("minigrad.") and name.split(".")[1] in MINIGRAD_FLOORS}


def minigrad_floors_imported(path: Path) -> set:
    return minigrad_floors(imported_modules(path, "minigrad"))


@pytest.mark.parametrize("module", sorted(MINIGRAD_FLOORS))
def test_minigrad_builds_upward(module):
    used = minigrad_floors_imported(ROOT / "minigrad" / f"{module}.py")
    allowed = MINIGRAD_FLOORS[module] | CALL_TIME_IMPORTS.get(module, set())
    assert used <= allowed, f"minigrad/{module}.py imports {sorted(used - allowed)}"


def test_tensor_uses_ops_only_when_an_operator_runs():
    """tensor.py's one import from above is ``from . import ops``, its last statement, and
    ``ops`` appears only inside function bodies: nothing runs it while tensor.py loads."""
    tree = ast.parse((ROOT / "minigrad" / "tensor.py").read_text())
    imports = [node for node in ast.walk(tree)
               if minigrad_floors(names_imported(node, "minigrad")) - MINIGRAD_FLOORS["tensor"]]
    last = tree.body[-1]
    assert imports == [last], "tensor.py must import ops once, as its last statement"
    assert isinstance(last, ast.ImportFrom) and last.level == 1 and [a.name for a in last.names] == ["ops"]

    def uses_outside_functions(node) -> list:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return []  # runs only when called
        here = [node.lineno] if isinstance(node, ast.Name) and node.id == "ops" else []
        return here + [line for child in ast.iter_child_nodes(node) for line in uses_outside_functions(child)]

    assert uses_outside_functions(ast.Module(body=tree.body[:-1], type_ignores=[])) == []


def test_minigrad_files_fit_100_columns():
    wide = [f"{path.name}:{number}" for path in sorted((ROOT / "minigrad").glob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 100]
    assert wide == []


def test_every_minigrad_module_has_a_floor():
    assert {p.stem for p in (ROOT / "minigrad").glob("*.py")} == set(MINIGRAD_FLOORS)


def test_the_maths_files_never_import_the_fast_path():
    offenders = {}
    for path in sorted((ROOT / "flows_np").glob("*.py")):
        if path.stem in FAST_PATH_USERS:
            continue
        fast = {name for name in imported_modules(path, "flows_np")
                if name.startswith(("minigrad.fused", "flows_np.nf_fast", "flows_np.fm_fast"))}
        if fast:
            offenders[path.name] = sorted(fast)
    assert offenders == {}


def test_the_detector_sees_a_relative_import_of_the_fast_path(tmp_path):
    planted = tmp_path / "nf.py"
    planted.write_text("from . import nf_fast\nfrom minigrad.fused import TwinMLP\n")
    assert {"flows_np.nf_fast", "minigrad.fused.TwinMLP"} <= imported_modules(planted, "flows_np")
    planted.write_text("from .fused import TwinMLP\n")
    assert minigrad_floors_imported(planted) == {"fused"}
