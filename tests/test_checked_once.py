"""Checked once per call (docs/design.md): a public entry point checks its arguments, and what it
calls inside the library does not check them again. Every function of the backend's checks
module is wrapped with a counter; a training run, a sampler or a likelihood then makes the same
number of check calls whatever its number of batches or steps, and one ``fm_loss`` reads its
times once. A planted bug (the training step going through the checked ``fm_loss`` again) is
caught by the same counts."""
from __future__ import annotations

import collections
import inspect

import numpy as np
import pytest
import torch

from flows_np import checks as np_checks, fm as np_fm, likelihood as np_likelihood, nf as np_nf, \
    paths as np_paths, sde as np_sde, solvers as np_solvers, train as np_train
from flows_torch import checks as t_checks, fm as t_fm, solvers as t_solvers, train as t_train


def count_checks(monkeypatch, module) -> collections.Counter:
    """Wrap every function defined in (or re-exported by) a checks module with a counter; for
    the checks package (flows_np.checks) in the package and in each of its modules, so that the
    rules' calls of one another are counted too (once each: a wrapper calls the original)."""
    counts = collections.Counter()
    namespaces = [module] + [m for m in vars(module).values()
                             if inspect.ismodule(m) and m.__name__.startswith(module.__name__ + ".")]
    for namespace in namespaces:
        for name, function in list(vars(namespace).items()):
            if inspect.isfunction(function) and not name.startswith("_"):
                def counted(*args, _name=name, _function=function, **kwargs):
                    counts[_name] += 1
                    return _function(*args, **kwargs)
                monkeypatch.setattr(namespace, name, counted)
    return counts


#: Not input rules: the dispatch to a library model's maths, and the faults only a computation
#: can meet (a field's output of the wrong kind, NaN/inf), reported where they arise.
NOT_INPUT_RULES = {"maths_of", "is_library_model", "check_divergence_output", "check_field_output",
                   "check_finite_step", "check_sde_step"}
#: A time sampler is a callable handed to the loop and called once per batch; the library's own
#: (uniform_t, logit_normal_t) check their count n there (an integer, no data).
TIME_SAMPLER_RULES = {"time_sampler_inputs", "check_integer", "check_mean_std"}


def calls(monkeypatch, module, run) -> collections.Counter:
    counts = count_checks(monkeypatch, module)
    run()
    monkeypatch.undo()
    return collections.Counter({name: n for name, n in counts.items() if name not in NOT_INPUT_RULES})


def same_but_time_sampler(few: collections.Counter, many: collections.Counter) -> bool:
    """The two runs' checks agree but for the time sampler's count rule (one per batch)."""
    differ = {name for name in few.keys() | many.keys() if few[name] != many[name]}
    extra = many["time_sampler_inputs"] - few["time_sampler_inputs"]
    # check_integer is counted where the sampler's rule calls it through the patched module
    return differ <= TIME_SAMPLER_RULES and many["check_integer"] - few["check_integer"] in (0, extra)


POINTS = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)
LABELS = np.random.default_rng(1).integers(0, 3, 256)


def np_fm_run(batch_size, conditional=False, coupling=np_paths.independent_coupling, fast=True):
    def run():
        model = np_fm.VelocityMLP(hidden=8, depth=2, num_classes=3 if conditional else None,
                                  rng=np.random.default_rng(0))
        np_train.train_fm(model, POINTS, LABELS if conditional else None, epochs=1, batch_size=batch_size,
                          coupling=coupling, rng=np.random.default_rng(1), fast=fast)
    return run


class ReversedCoupling(np_paths.BatchCoupling):
    """A user's coupling: its maths is called per batch, its checks only at its own calls."""

    def permutation(self, x0, x1):
        return np.arange(x1.shape[0])[::-1].copy()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reader"])
@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("coupling", [np_paths.independent_coupling, np_paths.ot_coupling, ReversedCoupling()],
                         ids=["independent", "ot", "user"])
def test_train_fm_checks_its_data_once_not_per_batch(monkeypatch, conditional, coupling, fast):
    few = calls(monkeypatch, np_checks, np_fm_run(128, conditional, coupling, fast))  # 2 batches
    many = calls(monkeypatch, np_checks, np_fm_run(16, conditional, coupling, fast))  # 16 batches
    assert same_but_time_sampler(few, many) and few["model_points"] == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reader"])
def test_the_counts_catch_a_training_step_that_checks_again(monkeypatch, fast):
    """Planted bug: the step calls the checked fm_loss (whose rules then run every batch)."""
    def rechecking(v, path, x0, x1, t, y=None, noise=None):
        return np_fm.fm_loss(v.__self__, x0, x1, t, y, path=path, noise=noise)

    def rechecking_of(model):  # the fast path's loss, planted the same way
        return lambda path, x0, x1, t, y=None, noise=None: rechecking(model.velocity, path, x0, x1, t, y, noise)

    def plant():
        if fast:
            monkeypatch.setattr(np_train.fm_fast, "regression_loss_of", rechecking_of)
        else:
            monkeypatch.setattr(np_train, "velocity_regression_loss", rechecking)

    plant()
    few = calls(monkeypatch, np_checks, np_fm_run(128, fast=fast))
    plant()
    many = calls(monkeypatch, np_checks, np_fm_run(16, fast=fast))
    assert not same_but_time_sampler(few, many)


@pytest.mark.parametrize("fast", [True, False])
def test_train_nf_checks_its_data_once_not_per_batch(monkeypatch, fast):
    def run(batch_size):
        return lambda: np_train.train_nf(np_nf.NormalizingFlow(n_couplings=2, hidden=4, n_layers=2,
                                                               rng=np.random.default_rng(0)),
                                         POINTS, POINTS[:64], epochs=1, batch_size=batch_size, fast=fast,
                                         rng=np.random.default_rng(1))
    assert calls(monkeypatch, np_checks, run(128)) == calls(monkeypatch, np_checks, run(16))


def test_fm_loss_reads_its_times_once(monkeypatch):
    model = np_fm.VelocityMLP(hidden=8, depth=2, rng=np.random.default_rng(0))
    counts = calls(monkeypatch, np_checks, lambda: np_fm.fm_loss(model, POINTS[:8], POINTS[8:16], 0.5))
    assert counts["as_times"] == 1 and counts["check_pair"] == 1 and counts["velocity_inputs"] == 0


@pytest.mark.parametrize("method", np_solvers.METHODS)
def test_samplers_and_likelihood_check_once_not_per_step(monkeypatch, method):
    model = np_fm.VelocityMLP(hidden=8, depth=2, num_classes=3, rng=np.random.default_rng(0))
    x, y = POINTS[:16], LABELS[:16]
    runs = {
        "integrate": lambda steps: np_solvers.integrate(model, x, steps=steps, method=method, y=y),
        "sample_sde": lambda steps: np_sde.sample_sde(model, x, steps=steps, g=0.5, y=y,
                                                      rng=np.random.default_rng(0)),
        "log_prob": lambda steps: np_likelihood.log_prob(model, x.astype(np.float64), steps=steps,
                                                         method=method, y=y),
    }
    for name, run in runs.items():
        assert calls(monkeypatch, np_checks, lambda: run(3)) == calls(monkeypatch, np_checks, lambda: run(12)), name


@pytest.mark.parametrize("solvers, likelihood", [(np_solvers, np_likelihood), (t_solvers, None)])
def test_adaptive_solves_check_once_whatever_their_steps(monkeypatch, solvers, likelihood):
    """dopri5 at a loose and a tight tolerance (a few steps, many steps): the same checks."""
    torch_side = likelihood is None
    model = (t_fm.VelocityMLP(hidden=8, depth=2, generator=torch.Generator().manual_seed(0)).double()
             if torch_side else np_fm.VelocityMLP(hidden=8, depth=2, rng=np.random.default_rng(0)))
    x = torch.from_numpy(POINTS[:8].astype(np.float64)) if torch_side else POINTS[:8].astype(np.float64)
    module = t_checks if torch_side else np_checks
    runs = {"integrate": lambda tol: solvers.integrate(model, x, method="dopri5", rtol=tol, atol=tol)}
    if not torch_side:
        runs["log_prob"] = lambda tol: likelihood.log_prob(model, x, method="dopri5", rtol=tol, atol=tol)
    for name, run in runs.items():
        _, loose = solvers.integrate(model, x, method="dopri5", rtol=1e-2, atol=1e-2, return_stats=True)
        _, tight = solvers.integrate(model, x, method="dopri5", rtol=1e-9, atol=1e-9, return_stats=True)
        assert tight.accepted > 3 * loose.accepted
        assert calls(monkeypatch, module, lambda: run(1e-2)) == calls(monkeypatch, module, lambda: run(1e-9)), name


def test_torch_training_and_sampling_check_once(monkeypatch):
    points, labels = torch.from_numpy(POINTS), torch.from_numpy(LABELS)

    def fm_run(batch_size):
        def run():
            model = t_fm.VelocityMLP(hidden=8, depth=2, num_classes=3, generator=torch.Generator().manual_seed(0))
            t_train.train_fm(model, points, labels, epochs=1, batch_size=batch_size, coupling=t_checks_ot(),
                             generator=torch.Generator().manual_seed(1))
            t_solvers.integrate(model, points[:16], steps=batch_size // 8, method="rk4", y=labels[:16])
        return run

    assert same_but_time_sampler(calls(monkeypatch, t_checks, fm_run(128)), calls(monkeypatch, t_checks, fm_run(16)))


def t_checks_ot():
    from flows_torch.paths import ot_coupling
    return ot_coupling
