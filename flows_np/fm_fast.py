"""Flow matching's training step, fast: the velocity network and the loss of Eq. 16 as one node.

The reader's path (:func:`flows_np.fm.velocity_regression_loss` on ``model.velocity``)
records every Linear layer, every LeakyReLU and the four operations of the loss as graph
nodes: about twenty nodes per step for the exercise's 5 x 64 network, each with its own
bookkeeping. :func:`fused_regression_loss` computes the same loss, with the same
gradients bit for bit, as ONE node (:func:`minigrad.fused.leaky_mlp_squared_error`):

    x_t, u_t = path.interpolate(x0, x1, t, noise)              (Eq. 14-15, the path's maths)
    h        = [x_t, time features, e_y]                        (``model.inputs``)
    L        = sum_i || net(h_i) - u_t_i ||^2 / N               (Eq. 16)

with the network's backward pass written out by hand (module docstring of
:mod:`minigrad.fused`). :func:`flows_np.train.train_fm` opts into it (``fast=True``, its
default) for the library's :class:`~flows_np.fm.VelocityMLP`; tests/test_fm_fast.py holds
it equal to the reader's path: the same loss and gradients, and the same weights after
training.
"""
from __future__ import annotations

from minigrad.fused import leaky_mlp_layers, leaky_mlp_squared_error

from . import checks
from .fm import VelocityMLP
from .paths import LinearPath

__all__ = ["supports", "fused_regression_loss", "regression_loss_of"]


def supports(model) -> bool:
    """Whether :func:`fused_regression_loss` knows `model`: the library's velocity MLP (a
    subclass that redefines ``velocity`` or ``inputs``, or whose network was changed to one the
    fused kernel does not read, keeps the reader's path)."""
    kind = type(model)
    return (isinstance(model, VelocityMLP) and kind.velocity is VelocityMLP.velocity
            and kind.inputs is VelocityMLP.inputs and is_leaky_mlp(model.net))


def is_leaky_mlp(net) -> bool:
    """Whether `net` alternates Linear and LeakyReLU layers of one slope, ending with a Linear
    layer (what :func:`minigrad.fused.leaky_mlp_layers` reads)."""
    try:
        leaky_mlp_layers(net)
    except ValueError:
        return False
    return True


def fused_regression_loss(model: VelocityMLP, x0, x1, t, y=None, path=None, noise=None):
    """``fm_loss(model, x0, x1, t, y, path, noise)`` (Eq. 16) as one node: the same arguments
    and checks, the same scalar Tensor, the same gradients."""
    path = LinearPath() if path is None else path
    checks.check_fused_velocity(supports(model), model)
    x0, x1, t, y, noise = checks.fm_loss_inputs(model, path, x0, x1, t, y, noise)
    return regression_loss_of(model)(path, x0, x1, t, y, noise)


def regression_loss_of(model: VelocityMLP):
    """The maths of :func:`fused_regression_loss` for `model`, its layers read once: a function
    ``(path, x0, x1, t, y=None, noise=None) -> loss`` on checked inputs (t an (N,) array of the
    model's dtype), what a training loop calls per step (the weights' current values are read
    at every call)."""
    layers, slope = leaky_mlp_layers(model.net)
    slope = model.dtype.type(slope)

    def loss(path, x0, x1, t, y=None, noise=None):
        x_t, u_t = path.interpolate(x0, x1, t, noise)
        return leaky_mlp_squared_error(model.inputs(x_t, t, y), layers, slope, u_t)

    return loss
