"""The layout DESIGN.md promises: minigrad builds upward, and the fast paths sit beside
the reader's path, opted into by training code only (never imported by the maths files)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# minigrad's floors: each module may import the floors below it, never one above.
MINIGRAD_FLOORS = {
    "tensor": set(),
    "ops": {"tensor"},
    "nn": {"tensor", "ops"},
    "optim": {"tensor"},
    "gradcheck": {"tensor"},
    "fused": {"tensor", "ops", "nn"},  # the optional top floor
    "__init__": {"tensor", "ops", "nn", "optim", "gradcheck"},  # `import minigrad` never loads fused
}
# flows_np modules allowed to use the fast machinery (minigrad.fused, flows_np.nf_fast).
FAST_PATH_USERS = {"nf_fast", "train"}


def imported_modules(path: Path, package: str) -> set:
    """Absolute names of every module `path` imports (relative imports resolved against `package`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = package + ("." + base if base else "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import nf_fast`
    return names


def minigrad_floors_imported(path: Path) -> set:
    return {name.split(".")[1] for name in imported_modules(path, "minigrad")
            if name.startswith("minigrad.") and name.split(".")[1] in MINIGRAD_FLOORS}


@pytest.mark.parametrize("module", sorted(MINIGRAD_FLOORS))
def test_minigrad_builds_upward(module):
    used = minigrad_floors_imported(ROOT / "minigrad" / f"{module}.py")
    assert used <= MINIGRAD_FLOORS[module], f"minigrad/{module}.py imports {sorted(used - MINIGRAD_FLOORS[module])}"


def test_every_minigrad_module_has_a_floor():
    assert {p.stem for p in (ROOT / "minigrad").glob("*.py")} == set(MINIGRAD_FLOORS)


def test_the_maths_files_never_import_the_fast_path():
    offenders = {}
    for path in sorted((ROOT / "flows_np").glob("*.py")):
        if path.stem in FAST_PATH_USERS:
            continue
        fast = {name for name in imported_modules(path, "flows_np")
                if name.startswith(("minigrad.fused", "flows_np.nf_fast"))}
        if fast:
            offenders[path.name] = sorted(fast)
    assert offenders == {}


def test_the_detector_sees_a_relative_import_of_the_fast_path(tmp_path):
    planted = tmp_path / "nf.py"
    planted.write_text("from . import nf_fast\nfrom minigrad.fused import TwinMLP\n")
    assert {"flows_np.nf_fast", "minigrad.fused.TwinMLP"} <= imported_modules(planted, "flows_np")
    planted.write_text("from .fused import TwinMLP\n")
    assert minigrad_floors_imported(planted) == {"fused"}
