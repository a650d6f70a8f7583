"""The shared argument checks (flows_np.checks), the shared loop bookkeeping (flows_np.loop),
the path noise rule (AffinePath.draw_noise), and the rule that no module imports another
module's private names."""
from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minigrad as mg
from flows_np import paths as np_paths
from flows_np.checks import (as_array, check_clip_grad, check_labels, check_learning_rate, check_point_facts,
                             check_points, check_positive_int)
from flows_np.loop import TrainingRecord, validation_metrics
from flows_torch import paths as torch_paths
from flows_torch.checks import check_labels_tensor
from flows_torch.checks import check_points as check_points_tensor

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- positive ints, rates
@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_integers(value):
    out = check_positive_int(value, "epochs")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, 2.0, 1.5, True, "3", None])
def test_positive_int_refuses_the_rest(value):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        check_positive_int(value, "epochs")


def test_rates():
    assert check_learning_rate(1e-3) == 1e-3
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            check_learning_rate(bad)
    assert check_clip_grad(None) is None and check_clip_grad(2.0) == 2.0
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="clip_grad must be positive or None"):
            check_clip_grad(bad)


# --------------------------------------------------------------------------- labels
def test_labels_of_a_conditional_model():
    out = check_labels([0, 2, 1], 3, 3)
    assert isinstance(out, np.ndarray) and out.tolist() == [0, 2, 1]
    assert check_labels(mg.Tensor(np.array([1, 0])), 2, 2).tolist() == [1, 0]
    assert check_labels(np.zeros(0, np.int64), 0, 3).shape == (0,)
    cases = [
        (dict(labels=None, n=3, num_classes=3), r"class-conditional \(3 classes\): pass labels of shape \(3,\)"),
        (dict(labels=np.array([0, 1]), n=3, num_classes=3), r"labels must have shape \(3,\), got \(2,\)"),
        (dict(labels=np.zeros((3, 1), np.int64), n=3, num_classes=3), "shape"),
        (dict(labels=np.array([0.0, 1.0, 2.0]), n=3, num_classes=3), "labels must be integers"),
        (dict(labels=np.array([True, False, True]), n=3, num_classes=3), "integers"),
        (dict(labels=np.array([0, 1, 3]), n=3, num_classes=3), r"must lie in \[0, 3\), got range \[0, 3\]"),
        (dict(labels=np.array([0, -1, 2]), n=3, num_classes=3), r"\[0, 3\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            check_labels(**kwargs)


def test_labels_of_an_unconditional_model():
    assert check_labels(None, 3, None) is None
    assert check_labels(None, 3, None, strict=True) is None
    # a plain field without num_classes: the shape is checked, the values are not read
    y = np.array([7.5, -1.0, 3.0])
    assert check_labels(y, 3, None) is y
    assert check_labels([1, 2, 3], 3, None).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        check_labels(np.zeros(4), 3, None)
    # a model known to be unconditional refuses labels
    with pytest.raises(ValueError, match=r"val_labels were given but the model is unconditional"):
        check_labels(np.zeros(3, np.int64), 3, None, name="val_labels", strict=True)


def test_labels_name_appears_in_every_message():
    for call in (lambda: check_labels(None, 2, 4, name="labels y"),
                 lambda: check_labels(np.array([0]), 2, 4, name="labels y"),
                 lambda: check_labels(np.array([0, 9]), 2, 4, name="labels y")):
        with pytest.raises(ValueError, match="labels y"):
            call()


def test_torch_labels_follow_the_same_rule():
    x = torch.zeros(3, 2)
    y = check_labels_tensor(np.array([0, 1, 2]), x, 3)
    assert isinstance(y, torch.Tensor) and y.tolist() == [0, 1, 2]
    assert check_labels_tensor(None, x, None) is None
    t = torch.tensor([2.5, 1.0, 0.0])  # values of a plain field's labels are not read
    assert check_labels_tensor(t, x, None) is not None
    for args, message in [((None, x, 3), "class-conditional"), ((torch.tensor([0, 1]), x, 3), "shape"),
                          ((torch.tensor([0.0, 1.0, 2.0]), x, 3), "integers"),
                          ((torch.tensor([0, 1, 3]), x, 3), r"\[0, 3\)")]:
        with pytest.raises(ValueError, match=message):
            check_labels_tensor(*args)
        with pytest.raises(ValueError, match=message):
            check_labels(*(np.asarray(a) if isinstance(a, torch.Tensor) else a for a in (args[0],)),
                         3, args[2], name="labels y")
    with pytest.raises(ValueError, match="unconditional"):
        check_labels_tensor(torch.tensor([0, 1, 2]), x, None, strict=True)


# --------------------------------------------------------------------------- points
def test_points_rule_order_and_messages():
    good = np.zeros((4, 2), np.float32)
    assert check_points(good, "x") is good
    assert check_points(mg.Tensor(good), "x") is good
    assert as_array(mg.Tensor(good)) is good
    cases = [
        ((np.zeros(3), "x"), {}, r"x must have shape \(N, D\), got shape \(3,\)"),
        ((np.zeros((2, 2), np.int64), "x"), {}, "x must be floating point, got dtype int64"),
        ((np.array([[np.nan, 0.0]]), "x"), {}, "x contains NaN or inf"),
        ((np.zeros((0, 2)), "x"), dict(nonempty=True), r"\(N, D\) with N >= 1"),
        ((np.zeros(()), "x"), dict(ndim=None), r"\(N, \.\.\.\)"),
        ((np.zeros((2, 2), np.int64)[:, :, None], "x"), {}, "shape"),  # shape is judged before the dtype
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            check_points(*args, **kwargs)
    assert check_points(np.zeros((2, 1, 3, 3)), "x", ndim=None).shape == (2, 1, 3, 3)
    assert check_points(np.zeros((0, 2)), "x").shape == (0, 2)


def test_finiteness_is_only_asked_for_when_shape_and_dtype_are_fine():
    asked = []

    def all_finite():
        asked.append(True)
        return True

    with pytest.raises(ValueError, match="shape"):
        check_point_facts((3,), np.float32, True, all_finite, "x")
    with pytest.raises(ValueError, match="floating"):
        check_point_facts((3, 2), np.int64, False, all_finite, "x")
    assert not asked
    check_point_facts((3, 2), np.float32, True, all_finite, "x")
    assert asked


def test_torch_points_use_the_same_messages():
    for array, message in [(np.zeros(3), "shape"), (np.zeros((2, 2), np.int64), "floating point"),
                           (np.array([[np.inf, 0.0]]), "NaN or inf")]:
        with pytest.raises(ValueError, match=message) as numpy_error:
            check_points(array, "x")
        with pytest.raises(ValueError, match=message) as torch_error:
            check_points_tensor(torch.from_numpy(array), "x")
        assert str(numpy_error.value).split(" got")[0] == str(torch_error.value).split(" got")[0]
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_points_tensor(np.zeros((2, 2)), "x")
    leaf = torch.zeros(2, 2, requires_grad=True)
    assert not check_points_tensor(leaf, "x").requires_grad
    assert check_points_tensor(leaf, "x", detach=False) is leaf


# --------------------------------------------------------------------------- the path noise rule
@pytest.mark.parametrize("path_class", ["LinearPath", "CosinePath"])
def test_draw_noise_only_when_sigma_is_positive(path_class):
    x1 = np.zeros((5, 2), np.float32)
    rng = np.random.default_rng(0)
    assert getattr(np_paths, path_class)(0.0).draw_noise(x1, rng) is None
    assert rng.bit_generator.state == np.random.default_rng(0).bit_generator.state  # nothing drawn
    noise = getattr(np_paths, path_class)(0.3).draw_noise(x1, rng)
    assert noise.dtype == np.float32
    np.testing.assert_array_equal(noise, np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32))

    x1t = torch.zeros(5, 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert getattr(torch_paths, path_class)(0.0).draw_noise(x1t, g) is None
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    noise = getattr(torch_paths, path_class)(0.3).draw_noise(x1t, g)
    assert noise.dtype == torch.float64
    assert torch.equal(noise, torch.randn((5, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64))


# --------------------------------------------------------------------------- the loop's bookkeeping
def test_training_record_counts_records_and_reports():
    events = []
    record = TrainingRecord(10, epochs=2, batch_size=4, lr=0.1, progress=events.append)
    assert (record.batches_per_epoch, record.total_steps) == (3, 6)
    seen = []
    for epoch in record.epoch_numbers():
        for rows in record.batches(np.arange(10)[::-1]):
            seen.append((epoch, record.step, rows.tolist()))
            record.end_batch(record.check_loss(np.float32(record.step)), 0.5, record.check_grad_norm(1.0))
        record.end_epoch({"nll": 1.5})
    assert seen[:3] == [(1, 1, [9, 8, 7, 6]), (1, 2, [5, 4, 3, 2]), (1, 3, [1, 0])]
    h = record.history
    assert h["loss"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and all(type(v) is float for v in h["loss"])
    assert h["lr"] == [0.5] * 6 and h["epoch"] == [1, 2] and h["train_loss"] == [2.0, 5.0]
    assert h["val_nll"] == [1.5, 1.5] and len(h["epoch_time"]) == 2
    assert [e["kind"] for e in events] == ["batch"] * 3 + ["epoch"] + ["batch"] * 3 + ["epoch"]
    assert events[3]["val_nll"] == 1.5 and events[3]["epochs"] == 2 and events[4]["step"] == 4


def test_training_record_refuses_bad_arguments_and_non_finite_numbers():
    for kwargs, message in [(dict(epochs=0), "epochs"), (dict(batch_size=1.5), "batch_size"),
                            (dict(lr=-1.0), "lr"), (dict(clip_grad=0.0), "clip_grad")]:
        with pytest.raises(ValueError, match=message):
            TrainingRecord(10, **{**dict(epochs=1, batch_size=4, lr=0.1), **kwargs})
    record = TrainingRecord(10, epochs=1, batch_size=4, lr=0.1)
    for _ in record.epoch_numbers():
        for _ in record.batches(np.arange(10)):
            if record.step == 2:
                with pytest.raises(FloatingPointError, match=r"loss nan at epoch 1, batch 2/3 \(step 2/3\)"):
                    record.check_loss(float("nan"))
                with pytest.raises(FloatingPointError, match=r"gradient \(norm inf\) at epoch 1, batch 2/3"):
                    record.check_grad_norm(float("inf"))


def test_validation_metrics_runs_in_eval_mode_without_a_graph():
    model = mg.nn.Linear(2, 2)
    model.train()
    modes = []

    def validate():
        modes.append((model.training, mg.is_grad_enabled()))
        return {"loss": np.float32(0.25)}

    assert validation_metrics(model, None, mg.no_grad) == {}
    out = validation_metrics(model, validate, mg.no_grad)
    assert out == {"loss": 0.25} and type(out["loss"]) is float
    assert modes == [(False, False)] and model.training


# --------------------------------------------------------------------------- no private imports across modules
PACKAGES = ("minigrad", "flows_np", "flows_torch", "examples", "benchmarks")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside `current`."""
    if level == 0:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(root: Path = ROOT, packages=PACKAGES) -> list:
    """``(file, line, what)`` for every import of another module's private name, and every
    ``alias._name`` access on a module imported as ``alias``, in the first-party packages."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            current = _module_name(path, root)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            module_aliases = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    source = _resolve(node.module or "", node.level, current, path.name == "__init__.py")
                    if source == "__future__" or source == current:
                        continue
                    for alias in node.names:
                        if _private(alias.name):
                            found.append((str(path.relative_to(root)), node.lineno,
                                          f"from {source} import {alias.name}"))
                        else:  # `from package import module`: remember the module's alias
                            module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        module_aliases[alias.asname or alias.name.split(".")[0]] = alias.name
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id in module_aliases and _private(node.attr)):
                    target = module_aliases[node.value.id]
                    if target.split(".")[0] in packages and target != current:
                        found.append((str(path.relative_to(root)), node.lineno, f"{target}.{node.attr}"))
    return found


def test_the_detector_finds_private_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("_x = 1\ndef _f():\n    return _x\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "from __future__ import annotations\nfrom .a import _x\nfrom pkg.a import __doc__\n")
    (tmp_path / "pkg" / "c.py").write_text("from pkg import a\nimport pkg.a as m\nprint(a._f(), m._x, a.__name__)\n")
    (tmp_path / "pkg" / "d.py").write_text("from . import a\nfrom .a import _f as public_name\n")
    found = private_imports(tmp_path, ("pkg",))
    what = sorted(w for _, _, w in found)
    assert what == ["from pkg.a import _f", "from pkg.a import _x", "pkg.a._f", "pkg.a._x"], what


def test_no_module_imports_another_modules_private_names():
    """DESIGN.md: "No module imports another's private (`_name`) names"."""
    found = private_imports()
    assert not found, "private names imported across modules:\n" + "\n".join(
        f"  {file}:{line}: {what}" for file, line, what in found)


def test_the_shared_checks_and_loop_need_numpy_only():
    code = ("import sys, flows_np.checks, flows_np.loop; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('minigrad', 'torch', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
