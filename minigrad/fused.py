"""Fused multi-layer perceptrons: a whole stack of Linear + LeakyReLU layers as ONE graph node.

The exercise's networks are tiny (width 8 in the normalizing flow, 64 in flow
matching), so evaluating them layer by layer costs far more in per-operation
bookkeeping than in arithmetic. :func:`leaky_mlp` computes exactly what the layer-by-
layer graph computes, for K networks of identical shape at once (the affine coupling's
log-scale and shift nets read the same input, Eq. 3), with the backward pass written
out by hand:

forward, for layers l = 1..L with pre-activations a_l and activations h_l::

    h_0 = x
    a_l = h_{l-1} W_l^T + b_l
    h_l = leaky(a_l)            (l < L; the last layer is linear: out = a_L)

backward, from g_L = dLoss/d out::

    dLoss/dW_l = g_l^T h_{l-1}          (summed over the batch)
    dLoss/db_l = sum over the batch of g_l
    g_{l-1}    = (g_l W_l) * leaky'(a_{l-1}),   leaky'(a) = 1 if a > 0 else slope

The saving is in bookkeeping, not arithmetic: the same matrix products run, network
by network, but as one node instead of two per layer and network.
"""
from __future__ import annotations

import numpy as np

from .ops import _lift, column_sum
from .tensor import Tensor, make_node

__all__ = ["leaky_mlp", "leaky", "mlp_forward", "mlp_backward"]


def leaky_mlp(x, nets, negative_slope: float = 0.01) -> Tensor:
    """Evaluate K LeakyReLU MLPs of identical shape on `x` as one node.

    x: (N, in) read by every network, or (K, N, in) one input per network.
    nets: K lists of ``(weight, bias)`` pairs (Tensors; weight (out, in) as in
      :class:`minigrad.nn.Linear`, bias (out,) or None for all layers of all nets),
      the same layer shapes in every network.
    Returns (K, N, out): ``result[k]`` equals ``net_k(x)`` evaluated layer by layer.
    """
    nets = [list(net) for net in nets]
    if not nets or not nets[0]:
        raise ValueError("leaky_mlp needs at least one network with at least one layer")
    depth = len(nets[0])
    for k, net in enumerate(nets):
        if len(net) != depth:
            raise ValueError(f"leaky_mlp: network {k} has {len(net)} layers, network 0 has {depth}")
        for l, (w, b) in enumerate(net):
            if w.shape != nets[0][l][0].shape or (b is None) != (nets[0][l][1] is None):
                raise ValueError(f"leaky_mlp: layer {l} of network {k} differs in shape from network 0")
    has_bias = nets[0][0][1] is not None and all(b is not None for net in nets for _, b in net)
    if any(b is None for net in nets for _, b in net) and has_bias:
        raise ValueError("leaky_mlp: biases must be present in every layer or in none")
    first_weight = nets[0][0][0]
    x = _lift(x, first_weight)
    if x.shape[-1] != first_weight.shape[1] or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[0] != len(nets)):
        raise ValueError(f"leaky_mlp: input of shape {x.shape} does not fit {len(nets)} networks "
                         f"whose first weight is {first_weight.shape}")
    slope = first_weight.data.dtype.type(negative_slope)
    shared_input = x.ndim == 2
    runs = [mlp_forward(x.data if shared_input else x.data[k], net, slope) for k, net in enumerate(nets)]
    out = np.stack([run[0] for run in runs])

    def vjp(g_all):
        per_param, gx = [], []
        for k, net in enumerate(nets):
            g_input, grads = mlp_backward(g_all[k], net, runs[k][1], slope, x.requires_grad)
            per_param.extend(grads if has_bias else grads[0::2])
            gx.append(g_input)
        if not x.requires_grad:
            return (None, *per_param)
        return (sum(gx[1:], gx[0]) if shared_input else np.stack(gx), *per_param)

    params = tuple(p for net in nets for w, b in net for p in ((w, b) if has_bias else (w,)))
    return make_node(out, (x, *params), vjp, "leaky_mlp")


def leaky(a: np.ndarray, slope) -> np.ndarray:
    """LeakyReLU on an array: ``max(a, slope a)`` for slopes in [0, 1]."""
    return np.maximum(a, slope * a) if 0 <= slope <= 1 else np.where(a > 0, a, slope * a)


def mlp_forward(x: np.ndarray, layers, slope) -> tuple[np.ndarray, tuple]:
    """One network's forward pass on arrays: ``(out, saved)`` where `saved` holds each
    layer's input h_{l-1} and the pre-activations a_l that the backward pass needs.
    `layers`: ``(weight, bias)`` Tensors (bias may be None)."""
    inputs, pre = [], []
    h = x
    last = len(layers) - 1
    for l, (w, b) in enumerate(layers):
        inputs.append(h)
        a = h @ w.data.T
        if b is not None:
            a += b.data
        if l < last:
            pre.append(a)
            h = leaky(a, slope)
    return a, (inputs, pre)


def mlp_backward(g: np.ndarray, layers, saved: tuple, slope, input_grad: bool = True):
    """One network's backward pass (module docstring): returns ``(dL/dx or None,
    [dL/dW_1, dL/db_1, dL/dW_2, ...])`` (None for a missing bias) given g = dL/d out."""
    inputs, pre = saved
    depth = len(layers)
    grads = [None] * (2 * depth)
    for l in range(depth - 1, -1, -1):
        w, b = layers[l]
        grads[2 * l] = g.T @ inputs[l]
        grads[2 * l + 1] = column_sum(g) if b is not None else None
        if l > 0:  # back through layer l and the LeakyReLU before it
            g = g @ w.data
            g = np.where(pre[l - 1] > 0, g, slope * g)
        elif input_grad:
            g = g @ w.data
    return (g if input_grad else None), grads
