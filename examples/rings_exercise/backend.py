"""The library calls of a run, on numpy arrays in and out, for either backend.

``flows_np`` (numpy on minigrad) and ``flows_torch`` (its PyTorch twin) have the same
module and function names (DESIGN.md, "One vocabulary for both backends"): this adapter
only converts arrays and random generators, so that the questions, the figures and the
report are written once. The training calls go through ``<package>.train.train_nf`` and
``<package>.train.train_fm``; the bonus through ``<package>.bonus.bonus_point_trajectory``.
"""
from __future__ import annotations

import importlib

import numpy as np

from examples.rings_exercise.settings import Settings

__all__ = ["Backend", "TorchBackend", "make_backend"]

class Backend:
    """The library calls of a run, on numpy arrays in and out, for either backend.

    ``flows_np`` and ``flows_torch`` have the same module and function names; this
    class only converts arrays and random generators, so that the rest of the run
    (questions, figures, report) is written once."""

    name = "numpy"
    package = "flows_np"

    def __init__(self):
        mod = lambda m: importlib.import_module(f"{self.package}.{m}")  # noqa: E731
        self.nf, self.fm, self.train, self.solvers = mod("nf"), mod("fm"), mod("train"), mod("solvers")
        self.likelihood, self.checkpoint, self.bonus = mod("likelihood"), mod("checkpoint"), mod("bonus")
        self.splines, self.paths, self.ema = mod("splines"), mod("paths"), mod("ema")

    # ---- conversions (numpy backend: minigrad)
    def generator(self, seed: int):
        return np.random.default_rng(seed)

    def array(self, x):
        return x

    def numpy(self, x) -> np.ndarray:
        import minigrad as mg
        return x.data if isinstance(x, mg.Tensor) else np.asarray(x)

    def no_grad(self):
        import minigrad as mg
        return mg.no_grad()

    # ---- models
    def make_nf(self, s: Settings, seed: int):
        if s.nf_kind == "spline":
            return self.splines.SplineFlow(dim=2, n_couplings=s.nf_couplings, hidden=s.nf_hidden,
                                           n_blocks=s.nf_blocks, n_bins=s.nf_bins, bound=s.nf_bound,
                                           **self._init_rng(seed))
        return self.nf.NormalizingFlow(dim=2, n_couplings=s.nf_couplings, hidden=s.nf_hidden,
                                       n_layers=s.nf_layers, **self._init_rng(seed))

    def make_fm(self, s: Settings, seed: int, num_classes=None):
        return self.fm.VelocityMLP(dim=2, hidden=s.fm_hidden, depth=s.fm_depth, num_classes=num_classes,
                                   **self._init_rng(seed))

    def _init_rng(self, seed):
        return {"rng": np.random.default_rng(seed)}

    def train_nf(self, flow, train, val, s: Settings, seed: int, progress):
        epochs, batch_size, lr = s.nf_training()
        return self.train.train_nf(flow, self.array(train), self.array(val), epochs=epochs,
                                   batch_size=batch_size, lr=lr, progress=progress, **self._rng_kw(seed))

    def train_fm(self, model, points, labels, s: Settings, seed: int, progress, val=None, ema=None):
        """Alg. 1 with the run's settings: the coupling ``s.fm_coupling`` (exact minibatch OT inside
        each class for a conditional model, see ``train_fm``); with ``ema`` (an
        ``<package>.ema.ExponentialMovingAverage`` of ``model``) the average follows every step."""
        val = {} if val is None else {"val_points": self.array(val[0]),
                                      "val_labels": None if val[1] is None else self.array(val[1])}
        coupling = {"coupling": self.paths.ot_coupling} if s.fm_coupling == "ot" else {}
        progress = progress if ema is None else ema.progress(progress)
        return self.train.train_fm(model, self.array(points), None if labels is None else self.array(labels),
                                   epochs=s.epochs_of("fm" if labels is None else "cfm"),
                                   batch_size=s.batch_size, lr=s.lr, progress=progress,
                                   **coupling, **val, **self._rng_kw(seed))

    def make_ema(self, model, s: Settings):
        """The EMA of ``model``'s weights that the run samples and scores with, or None (``s.ema_decay`` 0)."""
        return self.ema.ExponentialMovingAverage(model, s.ema_decay) if s.ema_decay > 0 else None

    def _rng_kw(self, seed):
        return {"rng": self.generator(seed)}

    # ---- normalizing flow
    def nf_sample(self, flow, n: int, seed: int) -> np.ndarray:
        return self.numpy(flow.sample(n, self.generator(seed)))

    def nf_forward_trajectory(self, flow, z) -> np.ndarray:
        return self.numpy(flow.forward_trajectory(self.array(z)))

    def nf_inverse_trajectory(self, flow, x) -> np.ndarray:
        return self.numpy(flow.inverse_trajectory(self.array(x)))

    def nf_forward(self, flow, z) -> np.ndarray:
        with self.no_grad():
            return self.numpy(flow.forward(self.array(z)))

    def nf_log_prob(self, flow, x, batch: int = 8192) -> np.ndarray:
        with self.no_grad():
            return np.concatenate([self.numpy(flow.log_prob(self.array(x[i:i + batch])))
                                   for i in range(0, len(x), batch)])

    def permutation(self, layer):
        """The index array of a permutation layer, or None for a coupling."""
        perm = getattr(layer, "perm", None)
        return None if perm is None else np.asarray(self.numpy(perm)).astype(np.int64)

    # ---- flow matching
    def integrate(self, v, x, t0=0.0, t1=1.0, steps=1000, method="euler", y=None, trajectory=False):
        out = self.solvers.integrate(v, self.array(x), t0=t0, t1=t1, steps=steps, method=method,
                                     y=None if y is None else self.array(y), trajectory=trajectory)
        return self.numpy(out)

    def fm_log_prob(self, v, x, steps, y=None, batch: int = 1000) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            yb = None if y is None else self.array(y[i:i + batch])
            out.append(self.numpy(self.likelihood.log_prob(v, self.array(x[i:i + batch]), steps=steps,
                                                           method="rk4", y=yb)))
        return np.concatenate(out)

    def bonus_trajectory(self, v, steps: int, method: str = "rk4") -> dict:
        """The bonus (Sec. 4.3): the noise that the flow sends to (4, 5), and its round trip."""
        result = self.bonus.bonus_point_trajectory(v, target=(4.0, 5.0), steps=steps, method=method)
        return {k: (val if isinstance(val, (float, int)) else self.numpy(val)) for k, val in result.items()}

    # ---- checkpoints
    def save(self, path, model, config, extra):
        self.checkpoint.save_checkpoint(path, model, config, extra)

    def load(self, path, model):
        return self.checkpoint.load_checkpoint(path, model)


class TorchBackend(Backend):
    """The PyTorch twin (CPU), same calls; tensors in and out are converted here."""

    name = "torch"
    package = "flows_torch"

    def __init__(self):
        import torch
        self.torch = torch
        super().__init__()

    def generator(self, seed: int):
        return self.torch.Generator().manual_seed(int(seed))

    def array(self, x):
        return self.torch.as_tensor(np.asarray(x))

    def numpy(self, x) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def no_grad(self):
        return self.torch.no_grad()

    def _init_rng(self, seed):
        return {"generator": self.generator(seed)}

    def _rng_kw(self, seed):
        return {"generator": self.generator(seed)}


def make_backend(name: str) -> Backend:
    return TorchBackend() if name == "torch" else Backend()
