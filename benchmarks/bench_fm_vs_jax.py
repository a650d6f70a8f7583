"""The flow-matching training step (MLP 5 x 64, batch 128, Adam) on minigrad beside jax.jit of the
same step, interleaved in one process, one thread each.

jax is a peer for measurement, not a dependency of the project: install it in a scratch
environment that can also import this checkout, e.g.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install "jax[cpu]" numpy
    PYTHONPATH=. /tmp/peers/bin/python -m benchmarks.bench_fm_vs_jax [--repeats 31] [--old DIR]

Rows: ``fm_loss`` (the public, checked loss), the reader's step (``velocity_regression_loss``
on the model's ``velocity``, op by op: what ``train_fm(..., fast=False)`` runs after checking
its data once), ``train_fm``'s default step (``flows_np.fm_fast.fused_regression_loss``: the
network and the loss as one node, the same gradients bit for bit) and ``jax.jit`` of the same
maths (the same weights and batch; Adam written out as in ``minigrad.optim.Adam``). With ``--old DIR``, a directory holding an
older checkout's packages renamed ``minigrad_old`` / ``flows_np_old``, its ``fm_loss`` step
joins the interleaving (how the README's before/after rows were measured).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from benchmarks.harness import paired_ratios, step_inputs, time_interleaved, training_step  # noqa: E402
from flows_np import fm, fm_fast  # noqa: E402
from flows_np.paths import LinearPath  # noqa: E402

BATCH, WIDTH, DEPTH = 128, 64, 5


def jax_step(state: dict, x0, x1, t, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
    """A jitted Adam step on Eq. 16 for the MLP whose weights are in `state` (torch layout)."""
    import jax
    import jax.numpy as jnp

    names = sorted(state, key=lambda k: (int(k.split(".")[1]), k.endswith("bias")))

    def loss(params, x0, x1, t):
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        h = jnp.concatenate([xt, t[:, None]], axis=1)
        for i in range(0, len(names), 2):
            if i:
                h = jnp.where(h >= 0, h, 0.01 * h)
            h = h @ params[names[i]].T + params[names[i + 1]]
        diff = h - (x1 - x0)
        return jnp.sum(diff * diff) / x0.shape[0]

    @jax.jit
    def step(params, m, v, k, x0, x1, t):
        grads = jax.grad(loss)(params, x0, x1, t)
        k = k + 1
        m = {n: betas[0] * m[n] + (1 - betas[0]) * grads[n] for n in params}
        v = {n: betas[1] * v[n] + (1 - betas[1]) * grads[n] ** 2 for n in params}
        bias1, bias2 = 1 - betas[0] ** k, 1 - betas[1] ** k  # torch's update, as minigrad's Adam
        params = {n: params[n] - (lr / bias1) * m[n] / (jnp.sqrt(v[n]) / jnp.sqrt(bias2) + eps) for n in params}
        return params, m, v, k

    params = {n: jnp.asarray(a) for n, a in state.items()}
    carry = [params, {n: jnp.zeros_like(a) for n, a in params.items()},
             {n: jnp.zeros_like(a) for n, a in params.items()}, jnp.asarray(0.0, jnp.float32)]
    batch = tuple(jnp.asarray(a) for a in (x0, x1, t))

    def run():
        carry[:] = step(*carry, *batch)
        carry[0][names[-1]].block_until_ready()
    return run


def contenders(old_dir: str | None) -> dict:
    x1, x0, t = step_inputs(np.random.default_rng(0), BATCH)
    models = {name: fm.VelocityMLP(hidden=WIDTH, depth=DEPTH, rng=np.random.default_rng(0))
              for name in ("public", "loop", "fused")}
    path = LinearPath()
    out = {
        "minigrad fm_loss (checked)": training_step(lambda m=models["public"]: fm.fm_loss(m, x0, x1, t),
                                                    mg.optim.Adam(models["public"].parameters(), lr=1e-3)),
        "minigrad reader's step (op by op)": training_step(
            lambda m=models["loop"]: fm.velocity_regression_loss(m.velocity, path, x0, x1, t),
            mg.optim.Adam(models["loop"].parameters(), lr=1e-3)),
        "minigrad train_fm step (fm_fast)": training_step(
            lambda loss=fm_fast.regression_loss_of(models["fused"]): loss(path, x0, x1, t),
            mg.optim.Adam(models["fused"].parameters(), lr=1e-3)),
    }
    if old_dir:
        sys.path.insert(0, old_dir)
        import flows_np_old.fm as old_fm
        import minigrad_old as old_mg
        old = old_fm.VelocityMLP(hidden=WIDTH, depth=DEPTH, rng=np.random.default_rng(0))
        out["minigrad fm_loss, older checkout"] = training_step(lambda: old_fm.fm_loss(old, x0, x1, t),
                                                                old_mg.optim.Adam(old.parameters(), lr=1e-3))
    try:
        out["jax.jit"] = jax_step({k: np.array(v) for k, v in models["public"].state_dict().items()}, x0, x1, t)
    except ImportError:
        print("jax is not installed here: the jax row is left out (see the module docstring)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--inner", type=int, default=100)
    parser.add_argument("--old", default=None, help="directory with minigrad_old / flows_np_old packages")
    args = parser.parse_args()
    result = time_interleaved(contenders(args.old), repeats=args.repeats, inner=args.inner, warmup=50)
    ratios = paired_ratios(result, "jax.jit") if "jax.jit" in result else {}
    for name, r in result.items():
        line = f"{name:36s} median {1e3 * r['median']:.3f} ms  min {1e3 * r['min']:.3f} ms"
        if ratios:
            q = ratios[name]
            line += f"  {q['median']:.2f}x jax.jit (rounds' quartiles {q['q1']:.2f}-{q['q3']:.2f})"
        print(line)


if __name__ == "__main__":
    main()
