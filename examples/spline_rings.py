"""A neural spline flow on the Olympic rings (issue 17): how far a more expressive coupling gets.

    python examples/spline_rings.py                 # the measured setting (minutes on 2 CPU cores)
    python examples/spline_rings.py --quick         # a smoke run in seconds
    python examples/spline_rings.py --seed 1 --steps 6000 --bins 16

The exercise's flow (flows_np.nf, 15 affine couplings) with its couplings replaced by
rational-quadratic spline couplings (flows_np.splines, Durkan et al. 2019): the same
NormalizingFlow, permutations, loss (Eq. 9) and sampling (Eq. 1). Trained by minimising
the training NLL with minigrad's Adam and a cosine learning-rate decay; reported:
held-out NLL (exact for a flow), the KL gap NLL - H(data) (flows_np.data.data_entropy),
the share of samples on a ring (flows_np.data.ring_membership: on any of the five annuli;
the samples carry no label for on_ring), and the wall time. A figure of samples goes to --out.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: one BLAS thread is fastest

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import minigrad as mg  # noqa: E402
from minigrad import optim  # noqa: E402
from examples.common.cli_checks import (exit_on_output_error, prepare_output_folder, require_at_least,  # noqa: E402
                                        require_batches_fit, require_non_negative, require_positive,
                                        require_positive_number)
from examples.common.report import write_json  # noqa: E402
from flows_np.files import atomic_path  # noqa: E402
from examples.common.kl import paired_kl  # noqa: E402
from flows_np.data import data_entropy, olympic_rings, olympic_rings_log_prob, ring_membership  # noqa: E402
from flows_np.splines import SplineFlow  # noqa: E402

#: The measured setting, and the smoke-test one (--quick).
DEFAULTS = dict(steps=12_000, batch_size=512, n_train=200_000, n_test=50_000, n_samples=20_000, couplings=4,
                hidden=64, blocks=2, bins=16)
QUICK = dict(steps=150, batch_size=128, n_train=5000, n_test=2000, n_samples=2000, couplings=2, hidden=16, blocks=1,
             bins=8)
COUNTS = list(DEFAULTS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (explicit flags still win)")
    for name in COUNTS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"default {DEFAULTS[name]}")
    parser.add_argument("--bound", type=float, default=3.5, help="B: splines act on [-B, B] (default 3.5)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's initial learning rate, cosine decay to 0")
    parser.add_argument("--entropy-samples", type=int, default=200_000, help="Monte Carlo samples for H(data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "spline_rings"), help="folder for figure and json")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for name in COUNTS:
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
    require_positive(parser, args, *COUNTS, "entropy_samples")
    require_non_negative(parser, args, "seed")
    require_at_least(parser, args, 2, "bins")
    # a mean with its standard error needs two points (one gives "+- nan")
    require_at_least(parser, args, 2, "n_test", "entropy_samples", why=" (a standard error needs two points)")
    require_positive_number(parser, args, "lr", "bound")
    require_batches_fit(parser, args.n_train, {"batch size": args.batch_size}, "--n-train")
    return args, prepare_output_folder(parser, args.out, [f"samples_seed{args.seed}.png", f"result_seed{args.seed}.json"])


def model_log_prob(flow, x, batch: int = 10_000) -> np.ndarray:
    """log q(x) (Eq. 2, exact for a flow) at every point of `x`, as float64: (N,)."""
    with mg.no_grad():
        return np.concatenate([flow.log_prob(x[i:i + batch]).data for i in range(0, len(x), batch)]).astype(float)


def train(flow, x_train, args, rng) -> list:
    """Minimise Eq. 9 over minibatches (reshuffled every pass) with Adam and cosine decay;
    returns the loss of every 100th step."""
    opt = optim.Adam(flow.parameters(), lr=args.lr)
    sched = optim.CosineAnnealingLR(opt, T_max=args.steps)
    per_pass = max(len(x_train) // args.batch_size, 1)
    losses, order = [], None
    for step in range(args.steps):
        if step % per_pass == 0:
            order = rng.permutation(len(x_train))
        i = step % per_pass
        loss = flow.loss(x_train[order[i * args.batch_size:(i + 1) * args.batch_size]])[0]
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            losses.append(loss.item())
            if not args.quick and step % 1000 == 0:
                print(f"  step {step:6d}: batch NLL {loss.item():.4f}", flush=True)
    return losses


def figure(samples, x_test, kl_gap, share, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True, sharey=True)
    for ax, points, title in ((axes[0], x_test, "data (held out)"),
                              (axes[1], samples, f"spline flow: KL gap {kl_gap:.3f} nats, {100 * share:.1f}% on a ring")):
        ax.scatter(*points[:5000].T, s=0.5, alpha=0.5)
        ax.set(title=title, aspect="equal", xlim=(-2.5, 2.5), ylim=(-2.2, 2.0))
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:  # whole or not at all
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return str(path)


def main(argv=None) -> dict:
    args, out = parse_args(argv)
    with exit_on_output_error("spline_rings.py"):  # a write refused after the checks (a full disk): exit 2
        return experiment(args, out)


def experiment(args, out) -> dict:
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    x_train, _ = olympic_rings(args.n_train, rng)
    x_test, _ = olympic_rings(args.n_test, rng)
    entropy, entropy_se = data_entropy(n=args.entropy_samples, rng=rng)
    flow = SplineFlow(2, args.couplings, args.hidden, args.blocks, args.bins, args.bound, rng=rng)
    print(f"spline flow: {args.couplings} couplings, {args.bins} bins on [-{args.bound}, {args.bound}], residual "
          f"nets {args.blocks} x {args.hidden}; {flow.num_parameters()} parameters; {args.steps} steps of "
          f"{args.batch_size}, lr {args.lr}", flush=True)

    losses = train(flow, x_train, args, rng)
    train_seconds = time.perf_counter() - start
    log_q = model_log_prob(flow, x_test)
    nll = float(-np.mean(log_q))
    paired = paired_kl(log_q, olympic_rings_log_prob(x_test))  # the same KL, paired on the test points
    samples = flow.sample(args.n_samples, rng)
    share = float(np.mean(ring_membership(samples).any(axis=1)))
    result = dict(seed=args.seed, held_out_nll=nll, data_entropy=entropy, data_entropy_se=entropy_se,
                  kl_gap=nll - entropy, paired_kl=paired["kl"], paired_kl_se=paired["kl_se"], on_ring_share=share, train_seconds=train_seconds,
                  wall_seconds=time.perf_counter() - start, losses_every_100=losses,
                  settings={k: v for k, v in vars(args).items() if k != "out"})
    result["figure"] = figure(samples, x_test, result["kl_gap"], share, out / f"samples_seed{args.seed}.png")
    result["wall_seconds"] = time.perf_counter() - start
    write_json(out / f"result_seed{args.seed}.json", result)
    print(f"held-out NLL {nll:.4f} nats, data entropy {entropy:.4f} (+-{entropy_se:.4f}), KL gap "
          f"{nll - entropy:.4f} (paired on the test points: {paired['kl']:.4f} +- {paired['kl_se']:.4f}); {100 * share:.1f}% of {args.n_samples} samples on a ring; training "
          f"{train_seconds:.0f} s, wall {result['wall_seconds']:.0f} s; figure {result['figure']}")
    return result


if __name__ == "__main__":
    main()
