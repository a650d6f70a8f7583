"""Reflow (flows_np.reflow), its straightness and sample-quality measures, and the
exercise's bonus (flows_np.bonus).

The reflow check runs the real pipeline at CI size: a small VelocityMLP is trained by
flow matching (Alg. 1) on a Gaussian target, then a copy is retrained on the teacher's
own (noise, sample) pairs. The same check rejects a planted bug: pairs shuffled
before training (which is plain flow matching again, with curved paths).
"""
import copy

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from flows_np import bonus
from flows_np import reflow as reflow_np
from flows_np.bonus import bonus_point_trajectory
from flows_np.data import olympic_rings
from flows_np.fm import VelocityMLP
from flows_np.reflow import (energy_distance, few_step_quality, reflow, reflow_pairs, rings_support, straightness,
                             train_on_pairs)
from flows_np.train import train_fm
from tests.analytic_fields import gaussian_velocity, marginal_std

MU, S = np.array([1.0, -1.0]), 0.3
TRAIN = dict(epochs=15, batch_size=128, lr=3e-3)


# --------------------------------------------------------------------------- reflow on a tiny problem
@pytest.fixture(scope="module")
def trained():
    """A flow-matching teacher, its reflowed student, and the measures of both."""
    rng = np.random.default_rng(0)
    teacher = VelocityMLP(2, 32, 3, rng=rng, dtype=np.float64)
    train_fm(teacher, MU + S * rng.standard_normal((2000, 2)), rng=rng, **TRAIN)
    teacher_state = teacher.state_dict()
    student, history, pairs = reflow(teacher, rng.standard_normal((2000, 2)), rng=rng, **TRAIN)
    probe, reference = rng.standard_normal((500, 2)), MU + S * rng.standard_normal((1000, 2))
    return dict(teacher=teacher, teacher_state=teacher_state, student=student, history=history, pairs=pairs,
                probe=probe, reference=reference, rng=rng)


def _assert_straighter_and_better(before, after, probe, reference, backend=reflow_np):
    """The reflow property: straightness (both measures) and 2-step samples improve clearly.
    `backend`: the module with the measures (flows_np.reflow or flows_torch.reflow)."""
    s_before, s_after = backend.straightness(before, probe), backend.straightness(after, probe)
    assert s_after["liu_straightness"] < 0.25 * s_before["liu_straightness"], (s_before, s_after)
    assert s_after["chord_deviation"] < 0.5 * s_before["chord_deviation"], (s_before, s_after)
    q_before = backend.few_step_quality(before, probe, reference, few_steps=(2,))[2]["energy_distance"]
    q_after = backend.few_step_quality(after, probe, reference, few_steps=(2,))[2]["energy_distance"]
    assert q_after < 0.5 * q_before, (q_before, q_after)


def test_reflow_straightens_the_flow_and_improves_few_step_samples(trained):
    _assert_straighter_and_better(trained["teacher"], trained["student"], trained["probe"], trained["reference"])


def test_shuffled_pairs_fail_the_reflow_check(trained):
    """Planted bug: the pairing is lost (x1 shuffled), so the student learns curved paths again."""
    x0, x1 = trained["pairs"]
    rng = np.random.default_rng(1)
    broken = copy.deepcopy(trained["teacher"])
    train_on_pairs(broken, x0, x1[rng.permutation(len(x1))], rng=rng, **TRAIN)
    with pytest.raises(AssertionError):
        _assert_straighter_and_better(trained["teacher"], broken, trained["probe"], trained["reference"])


def test_torch_reflow_straightens_the_same_teacher(trained):
    """The torch twin, started from the numpy teacher's weights, reflows it just as well."""
    torch = pytest.importorskip("torch")
    from flows_torch import reflow as reflow_torch
    from flows_torch.fm import VelocityMLP as TorchVelocityMLP

    teacher = TorchVelocityMLP(2, 32, 3, dtype=torch.float64)
    teacher.load_state_dict({k: torch.from_numpy(v) for k, v in trained["teacher_state"].items()})
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    student, history, _ = reflow_torch.reflow(teacher, noise, generator=generator, **TRAIN)
    assert len(history["loss"]) == TRAIN["epochs"] * 16
    probe, reference = (torch.from_numpy(trained[key]) for key in ("probe", "reference"))
    _assert_straighter_and_better(teacher, student, probe, reference, backend=reflow_torch)


def test_reflow_leaves_the_teacher_untouched_and_pairs_are_its_samples(trained):
    for key, value in trained["teacher"].state_dict().items():
        np.testing.assert_array_equal(value, trained["teacher_state"][key])
    x0, x1 = trained["pairs"]
    # (a batch of 10 rounds differently from one of 2000 in the BLAS: 1 ulp)
    np.testing.assert_allclose(reflow_pairs(trained["teacher"], x0[:10])[1], x1[:10], rtol=0, atol=1e-12)
    assert len(trained["history"]["loss"]) == TRAIN["epochs"] * 16


def test_reflow_into_a_separate_student_from_an_analytic_teacher():
    rng = np.random.default_rng(4)
    student = VelocityMLP(2, 16, 2, rng=rng, dtype=np.float64)
    out, history, _ = reflow(gaussian_velocity(MU, S), rng.standard_normal((256, 2)), student=student,
                             teacher_steps=20, epochs=1, batch_size=64, rng=rng)
    assert out is student and len(history["loss"]) == 4
    with pytest.raises(ValueError, match="student"):
        reflow(gaussian_velocity(MU, S), rng.standard_normal((8, 2)))


def test_class_conditional_reflow_keeps_labels_with_their_pairs():
    rng = np.random.default_rng(5)
    teacher = VelocityMLP(2, 16, 2, num_classes=3, rng=rng, dtype=np.float64)
    labels = rng.integers(0, 3, 64)
    student, _, (x0, x1) = reflow(teacher, rng.standard_normal((64, 2)), labels=labels, teacher_steps=5,
                                  epochs=1, batch_size=32, rng=rng)
    np.testing.assert_array_equal(reflow_pairs(teacher, x0, steps=5, y=labels)[1], x1)


def test_torch_class_conditional_reflow_keeps_labels_with_their_pairs():
    torch = pytest.importorskip("torch")
    from flows_torch import reflow as reflow_torch
    from flows_torch.fm import VelocityMLP as TorchVelocityMLP

    generator = torch.Generator().manual_seed(5)
    teacher = TorchVelocityMLP(2, 16, 2, num_classes=3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (64,), generator=generator)
    noise = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    student, history, (x0, x1) = reflow_torch.reflow(teacher, noise, labels=labels, teacher_steps=5, epochs=1,
                                                     batch_size=32, generator=generator)
    torch.testing.assert_close(reflow_torch.reflow_pairs(teacher, x0, steps=5, y=labels)[1], x1)
    assert len(history["loss"]) == 2
    with pytest.raises(ValueError, match="same shape"):
        reflow_torch.train_on_pairs(student, x0, x1[:10], labels=labels, epochs=1)


def test_train_on_pairs_rejects_mismatched_pairs():
    model = VelocityMLP(2, 8, 2, rng=np.random.default_rng(0), dtype=np.float64)
    with pytest.raises(ValueError, match="same shape"):
        train_on_pairs(model, np.zeros((4, 2)), np.zeros((5, 2)), epochs=1)


# --------------------------------------------------------------------------- straightness measures
def _constant_field(c):
    def v(x, t, y=None):
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(x)
        return x * 0.0 + c

    return v


def test_a_constant_field_is_perfectly_straight():
    probe = np.random.default_rng(0).standard_normal((20, 2))
    result = straightness(_constant_field(np.array([0.7, -2.0])), probe, steps=10)
    assert result["chord_deviation"] < 1e-14 and result["liu_straightness"] < 1e-26


def _gaussian_chord_deviation(probe, s, steps):
    """For the analytic field x_t = t mu + sigma_t x0 and the chord is t mu + (1 - t + t s) x0,
    so |x_t - chord| = |sigma_t - (1 - t + t s)| |x0|; trapezoidal rule on the same grid."""
    t = np.linspace(0.0, 1.0, steps + 1)
    gap = np.abs(marginal_std(t, s) - (1 - t + t * s))
    return np.mean(np.linalg.norm(probe, axis=1)) * np.mean(gap[1:] + gap[:-1]) / 2


@settings(max_examples=10, deadline=None)
@given(mu=hnp.arrays(np.float64, 2, elements=st.floats(-2.0, 2.0)), s=st.floats(0.2, 3.0),
       seed=st.integers(0, 2**32 - 1))
def test_chord_deviation_of_the_gaussian_flow_has_its_closed_form(mu, s, seed):
    probe = np.random.default_rng(seed).standard_normal((16, 2))
    measured = straightness(gaussian_velocity(mu, s), probe, steps=100)["chord_deviation"]
    assert measured == pytest.approx(_gaussian_chord_deviation(probe, s, 100), rel=1e-6, abs=1e-10)


def test_closed_form_check_rejects_a_chord_with_swapped_weights():
    """Planted bug: chord (t x_0 + (1 - t) x_1). The closed-form check above must fail."""
    probe = np.random.default_rng(0).standard_normal((16, 2))
    path = np.stack([0.5 * MU * k / 100 + marginal_std(k / 100, S) * probe for k in range(101)])
    t = np.linspace(0, 1, 101)[:, None, None]
    wrong = np.linalg.norm(path - (t * path[0] + (1 - t) * path[-1]), axis=-1)
    wrong = float(np.mean(wrong[1:] + wrong[:-1]) / 2)
    assert wrong != pytest.approx(_gaussian_chord_deviation(probe, S, 100), rel=1e-6)


# --------------------------------------------------------------------------- sample quality
@settings(max_examples=30, deadline=None)
@given(a=hnp.arrays(np.float64, 2, elements=st.floats(-5, 5)), b=hnp.arrays(np.float64, 2, elements=st.floats(-5, 5)),
       n=st.integers(2, 6), m=st.integers(2, 6))
def test_energy_distance_between_two_point_masses_is_twice_their_distance(a, b, n, m):
    """Within-set distances vanish, so D^2 = 2 |a - b|."""
    d = energy_distance(np.tile(a, (n, 1)), np.tile(b, (m, 1)))
    assert d == pytest.approx(2 * np.linalg.norm(a - b), rel=1e-9, abs=1e-6)


def test_energy_distance_separates_distributions():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((800, 2))
    same = energy_distance(rng.standard_normal((800, 2)), ref)
    shifted = energy_distance(rng.standard_normal((800, 2)) + [0.5, 0.0], ref)
    assert abs(same) < 0.01 < 0.1 < shifted


def _energy_backends():
    import torch

    from flows_torch import reflow as reflow_torch
    return [("numpy", energy_distance, np.asarray),
            ("torch", reflow_torch.energy_distance, torch.as_tensor)]


@pytest.mark.parametrize("offset", [1e4, -1e6, 1e8, 3e10])
def test_energy_distance_does_not_move_with_both_sets(offset):
    """Distances between the points do not change when both sets move by one vector, and
    the estimate must not either (no cancellation in |a|^2 + |b|^2 - 2 a.b far from 0).
    The moved sets are compared with the same points moved back exactly (Sterbenz)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 2)), 0.5 + rng.standard_normal((200, 2))
    far_a, far_b = a + offset, b + offset
    near_a, near_b = far_a - offset, far_b - offset  # exactly the far points' differences
    for name, energy, to in _energy_backends():
        want = energy(to(near_a), to(near_b))
        assert 0.1 < want and energy(to(far_a), to(far_b)) == pytest.approx(want, rel=1e-9, abs=1e-12), name
        # A set against itself: every cross distance is a within-set one, so the unbiased
        # estimate is exactly -(2 / N) times the mean distance between distinct points.
        mean = np.mean([np.linalg.norm(p - q) for i, p in enumerate(near_a) for q in near_a[i + 1:]])
        assert energy(to(far_a), to(far_a)) == pytest.approx(-2.0 / len(a) * mean, rel=1e-9), name


def test_energy_distance_of_a_float32_set_with_itself_far_from_the_origin():
    """The reported case: a float32 set against itself, both 1e4 from the origin."""
    x = (np.random.default_rng(2).standard_normal((500, 2)) + 1e4).astype(np.float32)
    centred = x.astype(np.float64) - 1e4  # exact: the same points, moved
    mean = np.mean(np.linalg.norm(centred[:, None] - centred[None], axis=-1)[np.triu_indices(500, 1)])
    for name, energy, to in _energy_backends():
        assert energy(to(x), to(x)) == pytest.approx(-2.0 / 500 * mean, rel=1e-9), name
        assert abs(energy(to(x), to(x))) < 0.01, name


def test_few_step_quality_with_the_rings_support():
    rng = np.random.default_rng(0)
    rings, _ = olympic_rings(400, rng, dtype=np.float64)
    assert rings_support(rings).all() and not rings_support(np.array([[4.0, 5.0]])).any()
    noise = rng.standard_normal((300, 2))
    scores = few_step_quality(_constant_field(np.array([3.0, 0.0])), noise, rings, few_steps=(1, 3),
                              support=rings_support)
    assert set(scores) == {1, 3}
    # the constant field moves N(0, I) to N((3, 0), I), mostly right of the logo
    assert scores[1]["support_fraction"] == pytest.approx(np.mean(rings_support(noise + [3.0, 0.0])))
    assert scores[1]["support_fraction"] < 0.2 and scores[3]["energy_distance"] > 1.0


# --------------------------------------------------------------------------- bonus
@pytest.mark.parametrize("mu, s", [(np.array([1.0, -1.0]), 0.3), (np.zeros(2), 1.0)])
def test_bonus_finds_the_exact_preimage_of_the_analytic_flow(mu, s):
    """phi(z) = mu + s z, so the noise that makes (4, 5) is ((4, 5) - mu) / s."""
    result = bonus_point_trajectory(gaussian_velocity(mu, s), steps=100, method="rk4")
    np.testing.assert_allclose(result["noise"], (np.array([4.0, 5.0]) - mu) / s, atol=1e-7)
    assert result["landing_error"] < 1e-8
    assert result["trajectory"].shape == result["reverse_trajectory"].shape == (101, 2)
    np.testing.assert_array_equal(result["trajectory"][0], result["noise"])
    assert result["noise_norm"] == pytest.approx(np.linalg.norm(result["noise"]))


def test_bonus_landing_error_reflects_the_solver():
    """Euler backwards is not the inverse of Euler forwards: the round trip misses by O(dt)."""
    v = gaussian_velocity(MU, S)
    coarse = bonus_point_trajectory(v, steps=50, method="euler")["landing_error"]
    fine = bonus_point_trajectory(v, steps=500, method="euler")["landing_error"]
    assert 1e-4 < fine < coarse / 5


def test_bonus_check_rejects_a_reverse_run_that_goes_forward(monkeypatch):
    """Planted bug: the 'reverse' integration runs from 0 to 1 like the sampler."""
    real = bonus.time_grid

    def forward_only(t0, t1, steps):
        return real(min(t0, t1), max(t0, t1), steps)

    monkeypatch.setattr(bonus, "time_grid", forward_only)
    assert bonus_point_trajectory(gaussian_velocity(MU, S), steps=100)["landing_error"] > 1.0


def test_bonus_with_a_float32_model_and_labels():
    model = VelocityMLP(2, 16, 3, num_classes=5, rng=np.random.default_rng(0))
    result = bonus_point_trajectory(model, steps=200, method="rk4", y=3)
    assert result["noise"].dtype == np.float32 and result["landing_error"] < 1e-4
    with pytest.raises(ValueError, match="target"):
        bonus_point_trajectory(model, target=(np.nan, 1.0), y=0)
