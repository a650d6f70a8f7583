"""The normalizing flow's training pass, fast: the whole inverse pass as ONE graph node.

:mod:`flows_np.nf` is the exercise: every coupling's inverse (Eq. 4, 6) is a dozen
minigrad operations, so a 15-coupling flow builds a graph of hundreds of nodes per
training step. Its networks are so small (width 8) that this bookkeeping, not the
arithmetic, dominates the step. Here the same computation, on the SAME parameter
Tensors of a :class:`~flows_np.nf.NormalizingFlow`, is one node whose backward pass is
written out by hand:

* :func:`fused_loss` ``(flow, x) -> (nll, log_pz, log_det)``: what ``flow.loss(x)``
  computes (Eq. 9), with the inverse pass as one node; :func:`flows_np.train.train_nf`
  trains on it unless called with ``fast=False``;
* :func:`fused_inverse` ``(flow, x) -> (z, log_det)``: what ``flow.inverse(x)`` computes
  (Eq. 7-8);
* :func:`fused_coupling_inverse` ``(coupling, y) -> (z, log_det)``: one coupling's
  inverse (Eq. 4, 6) as one node, what ``coupling.inverse(y)`` computes.

The tests (tests/test_nf_fast.py) hold all three equal to the op-by-op reader's path in
values and gradients.

One coupling. Its log-scale and shift networks read the same half ``y_l`` (Eq. 3), so
they run as one block-diagonal network of twice the width
(:class:`minigrad.fused.TwinMLP`, built from the coupling's own Linear layers: the
block arrays are refilled from the parameters at every call, so optimiser steps and
``load_state_dict`` are seen). With ``raw = scale_net(y_l)``, ``b = shift_net(y_l)``
(both from one pass of the twin network) and bound ``B``, the forward half
:func:`coupling_inverse_arrays` computes::

    log s = B tanh(raw / B),   e = exp(-log s),   z_r = (y_r - b) e,
    z = (y_l, z_r),            log_det = -sum_k log s_k

and keeps a tape; the backward half :func:`coupling_inverse_backward`, from
``g_z = dL/dz = (g_l, g_r)`` (N, dim) and ``g_ld = dL/dlog_det`` (N,), returns
``dL/dy`` and the parameter gradients::

    dL/dy_r    = g_r e
    dL/db      = -g_r e
    dL/dlog s  = -g_r z_r - g_ld          (d z_r / d log s = -z_r)
    dL/draw    = dL/dlog s (1 - tanh^2(raw / B))
    dL/dy_l    = g_l + (the twin network's backward pass from [dL/draw | dL/db])

The whole flow (:func:`fused_inverse`), same values and gradients as
``flow.inverse``, a handful of graph nodes per step instead of hundreds:

* forward, last layer first: each coupling runs :func:`coupling_inverse_arrays` and
  keeps its tape; a permutation is ``h -> h[:, order]`` with ``order = argsort(perm)``
  (:func:`permutation_inverse_arrays`); the couplings' log-dets add up (Eq. 7-8);
* backward, first layer first: each coupling's :func:`coupling_inverse_backward`; a
  permutation sends its gradient back as ``g[:, argsort(order)]`` (``= g[:, perm]``,
  :func:`permutation_inverse_backward`); every coupling's log-det receives the same
  ``dL/dlog_det``, since they are summed.

The node outputs ``[z | log_det]`` side by side and two slices hand them out.
"""
from __future__ import annotations

import weakref

import numpy as np

import minigrad as mg
from minigrad.fused import TwinMLP, leaky_mlp_layers, mlp_backward, mlp_forward
from minigrad.tensor import make_node

from . import checks
from .nf import AffineCoupling, Permutation, likelihood_loss

__all__ = ["supports", "fused_loss", "fused_inverse", "inverse_node", "fused_coupling_inverse", "twin_network", "coupling_parameters",
           "coupling_inverse_arrays", "coupling_inverse_backward", "permutation_inverse_arrays",
           "permutation_inverse_backward"]

# coupling -> (scale_net, shift_net, TwinMLP of their Linear layers, LeakyReLU slope)
_TWINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- one coupling
def twin_network(coupling: AffineCoupling) -> tuple[TwinMLP, float]:
    """The coupling's scale and shift networks as one block-diagonal network
    (:class:`minigrad.fused.TwinMLP`, holding the networks' own parameter Tensors) and
    their LeakyReLU slope. Built on first use and kept per coupling (rebuilt if the
    coupling's networks are replaced); the parameter values are read at every call."""
    entry = _TWINS.get(coupling)
    if entry is None or entry[0] is not coupling.scale_net or entry[1] is not coupling.shift_net:
        (scale_layers, slope), (shift_layers, _) = [leaky_mlp_layers(coupling.scale_net),
                                                     leaky_mlp_layers(coupling.shift_net)]
        entry = (coupling.scale_net, coupling.shift_net, TwinMLP(scale_layers, shift_layers), slope)
        _TWINS[coupling] = entry
    return entry[2], entry[3]


def coupling_parameters(coupling: AffineCoupling) -> list:
    """The coupling's parameters in the order :func:`coupling_inverse_backward` returns
    their gradients: scale net then shift net, layer by layer, weight then bias."""
    return twin_network(coupling)[0].parameters()


def coupling_inverse_arrays(coupling: AffineCoupling, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Eq. 4 and Eq. 6 on arrays: ``(z, log_det, tape)``, the tape holding what
    :func:`coupling_inverse_backward` needs (formulas in the module docstring)."""
    twin, slope = twin_network(coupling)
    slope = y.dtype.type(slope)
    k, bound = coupling.split, coupling.scale_bound
    y_l, y_r = y[:, :k], y[:, k:]
    layers = twin.layers()
    both, saved = mlp_forward(y_l, layers, slope)
    raw, b = both[:, :coupling.dim - k], both[:, coupling.dim - k:]
    th = np.tanh(raw / bound)
    log_s = bound * th
    e = np.exp(-log_s)
    z_r = (y_r - b) * e
    tape = (twin, slope, layers, saved, th, e, z_r)
    return np.concatenate([y_l, z_r], axis=1), -np.sum(log_s, axis=1), tape


def coupling_inverse_backward(coupling: AffineCoupling, tape: tuple, g_z: np.ndarray,
                              g_ld: np.ndarray) -> tuple[np.ndarray, list]:
    """The backward pass of :func:`coupling_inverse_arrays` (module docstring): from
    ``g_z = dL/dz`` (N, dim) and ``g_ld = dL/dlog_det`` (N,), returns ``(dL/dy, parameter
    gradients)``, the latter in :func:`coupling_parameters`' order."""
    twin, slope, layers, saved, th, e, z_r = tape
    k = coupling.split
    g_r = g_z[:, k:]
    g_yr = g_r * e
    g_raw = (-g_r * z_r - g_ld[:, None]) * (1 - th * th)
    g_l, grads = mlp_backward(np.concatenate([g_raw, -g_yr], axis=1), layers, saved, slope)
    g_y = np.concatenate([g_z[:, :k] + g_l, g_yr], axis=1)
    return g_y, twin.split_gradients(grads)


def fused_coupling_inverse(coupling: AffineCoupling, y) -> tuple[mg.Tensor, mg.Tensor]:
    """``coupling.inverse(y)`` (Eq. 4, 6) as ONE graph node: ``(z, log_det)``, Tensors
    (N, dim) and (N,). Training uses the whole-flow node (:func:`fused_inverse`); this one
    lets a coupling be compared with its op-by-op inverse on its own."""
    y = coupling.points(y, "y")
    dim = coupling.dim
    z, log_det, tape = coupling_inverse_arrays(coupling, y.data)
    out = np.concatenate([z, log_det[:, None]], axis=1)

    def vjp(g):
        g_y, grads = coupling_inverse_backward(coupling, tape, g[:, :dim], g[:, dim])
        return (g_y, *grads)

    node = make_node(out, (y, *coupling_parameters(coupling)), vjp, "affine_coupling_inverse")
    return node[:, :dim], node[:, dim]


# --------------------------------------------------------------------------- a permutation
def permutation_inverse_arrays(permutation, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A permutation's inverse on arrays: ``(h[:, order], order)``, ``order = argsort(perm)``
    (the tape is the order)."""
    order = permutation.inverse_order
    return h[:, order], order


def permutation_inverse_backward(order: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient of ``h[:, order]`` sent back to ``h``: ``g[:, argsort(order)]``."""
    return g[:, np.argsort(order)]


# --------------------------------------------------------------------------- the whole flow
def supports(flow) -> bool:
    """Whether :func:`fused_inverse` knows every layer of `flow`: affine couplings and
    permutations (the exercise's flow). Other couplings, e.g. the splines of
    :mod:`flows_np.splines`, have no fused pass and train on ``flow.loss``."""
    return not other_layer_kinds(flow)


def other_layer_kinds(flow) -> list:
    """The names of `flow`'s layer kinds that the fused pass does not know."""
    return sorted({type(layer).__name__ for layer in flow.layers
                   if not isinstance(layer, (AffineCoupling, Permutation))})


def fused_inverse(flow, x) -> tuple[mg.Tensor, mg.Tensor]:
    """``flow.inverse(x)`` (Eq. 7-8) as ONE graph node: ``(z, log_det)``, Tensors (N, dim)
    and (N,); `x` an array or Tensor of shape (N, dim), checked and cast to the flow's
    dtype as ``flow.inverse`` does. Passes in the module docstring. ValueError for a flow
    with other layers than affine couplings and permutations (see :func:`supports`)."""
    checks.check_fused_layers(other_layer_kinds(flow))
    return inverse_node(flow, flow.points(x, "x"))


def inverse_node(flow, x: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
    """The pass of :func:`fused_inverse` on checked points (a Tensor in the flow's dtype)."""
    layers = list(reversed(list(flow.layers)))
    h, log_det, tapes = x.data, None, []
    for layer in layers:
        if isinstance(layer, AffineCoupling):
            h, layer_log_det, tape = coupling_inverse_arrays(layer, h)
            log_det = layer_log_det if log_det is None else log_det + layer_log_det
        else:
            h, tape = permutation_inverse_arrays(layer, h)
        tapes.append(tape)
    dim = flow.dim
    out = np.concatenate([h, log_det[:, None]], axis=1)
    couplings = [layer for layer in layers if isinstance(layer, AffineCoupling)]

    def vjp(g):
        g_h, g_ld = g[:, :dim], g[:, dim]
        grads = []
        for layer, tape in zip(reversed(layers), reversed(tapes)):
            if isinstance(layer, AffineCoupling):
                g_h, layer_grads = coupling_inverse_backward(layer, tape, g_h, g_ld)
                grads.append(layer_grads)
            else:
                g_h = permutation_inverse_backward(tape, g_h)
        return (g_h, *(g for layer_grads in reversed(grads) for g in layer_grads))

    params = [p for layer in couplings for p in coupling_parameters(layer)]
    node = make_node(out, (x, *params), vjp, "flow_inverse")
    return node[:, :dim], node[:, dim]


def fused_loss(flow, x):
    """``flow.loss(x)``: ``FlowLoss(nll, log_pz, log_det)``, the batch means of Eq. 9 and of
    its two parts (:func:`flows_np.nf.likelihood_loss`), with the inverse pass as one node
    (:func:`fused_inverse`). Scalars; ``fused_loss(flow, x)[0].backward()`` fills the
    gradients of ``flow.parameters()``. An empty batch is refused, as by ``flow.loss``."""
    checks.check_fused_layers(other_layer_kinds(flow))
    return likelihood_loss(*inverse_node(flow, flow.points(x, "x", mean_of="the mean loss")))
