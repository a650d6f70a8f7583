"""docs/design.md, checked where a rule can be checked mechanically: the maths files hold no
input checks, each public entry point's maths exists under the name the notes give it, the
torch side takes its rules from its own checks module, and library docstrings carry no
issue numbers or machine timings. Each rule is also run on a planted violation."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATHS_FILES = ("nf", "fm", "paths", "solvers", "splines", "sde", "likelihood", "reflow", "bonus", "oracle")
BACKENDS = ("flows_np", "flows_torch")
# Maths written once for both backends (generic over the array type), in flows_np only.
SHARED_MATHS_FILES = ("dopri5",)
MATHS_PATHS = [(b, name) for b in BACKENDS for name in MATHS_FILES] + [("flows_np", name) for name in SHARED_MATHS_FILES]
NOTES = (ROOT / "docs" / "design.md").read_text()


def raises_in(source: str) -> list:
    """Line numbers of the ``raise`` statements of a module's source."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Raise)]


def long_lines(source: str, limit: int = 100) -> list:
    return [i for i, line in enumerate(source.splitlines(), 1) if len(line) > limit]


def foreign_checks(source: str) -> list:
    """Names starting with ``check`` imported from a flows_np maths module (the torch side's
    rules come from flows_torch.checks, which takes them from flows_np.checks)."""
    found = []
    maths = {f"flows_np.{name}" for name in MATHS_FILES + SHARED_MATHS_FILES}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in maths:
            found += [alias.name for alias in node.names if alias.name.startswith("check")]
    return found


@pytest.mark.parametrize("backend, name", MATHS_PATHS)
def test_maths_files_hold_no_raise_and_fit_100_columns(backend, name):
    source = (ROOT / backend / f"{name}.py").read_text()
    assert raises_in(source) == [], f"{backend}/{name}.py raises at lines {raises_in(source)}"
    assert long_lines(source) == [], f"{backend}/{name}.py: lines over 100 columns {long_lines(source)}"


def test_the_rules_catch_planted_violations():
    planted = "def f(x):\n    if x < 0:\n        raise ValueError('x')\n    return x\n"
    assert raises_in(planted) == [3]
    assert long_lines("x = 1\n" + "y = " + "1 + " * 30 + "1\n") == [2]
    assert foreign_checks("from flows_np.paths import check_sigma, LinearPath\n") == ["check_sigma"]


@pytest.mark.parametrize("path", sorted((ROOT / "flows_torch").glob("*.py")), ids=lambda p: p.name)
def test_torch_takes_no_rule_from_a_numpy_maths_module(path):
    assert foreign_checks(path.read_text()) == []


MATHS_OF = [("paths", "AffinePath.interpolate"), ("fm", "VelocityMLP.velocity"), ("fm", "velocity_regression_loss"),
            ("paths", "MinibatchOTCoupling.permutation"), ("paths", "IndependentCoupling.permutation"),
            ("paths", "permutation_within_classes"), ("paths", "pairing_of"), ("nf", "FlowLayer.forward_and_log_det"),
            ("nf", "likelihood_loss"),
            ("solvers", "solve"), ("solvers", "solve_with"), ("solvers", "solve_adaptive"),
            ("solvers", "as_state_field"), ("likelihood", "velocity_and_divergence"),
            ("oracle", "MixtureOracle.velocity"), ("oracle", "MixtureOracle.marginal_log_prob"),
            ("likelihood", "exact_log_prob"), ("sde", "score")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("module, name", MATHS_OF)
def test_every_maths_function_of_the_notes_exists_on_both_backends(backend, module, name):
    assert name.split(".")[-1] in NOTES
    obj = importlib.import_module(f"{backend}.{module}")
    for part in name.split("."):
        if part == "forward_and_log_det":  # written by each layer kind, documented on the base
            assert "forward_and_log_det" in obj.__doc__
            return
        obj = getattr(obj, part)
    assert callable(obj)


@pytest.mark.parametrize("package", ("flows_np", "flows_torch", "minigrad"))
def test_library_docstrings_carry_no_issue_numbers_or_machine_timings(package):
    pattern = re.compile(r"\bissues? \d+|this (2-core )?(CPU|machine)|\bthis session\b", re.IGNORECASE)
    hits = [f"{path.name}:{i}" for path in sorted((ROOT / package).glob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
