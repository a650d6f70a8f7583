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

__all__ = ["leaky_mlp"]


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

    def leaky(a):
        return np.maximum(a, slope * a) if 0 <= slope <= 1 else np.where(a > 0, a, slope * a)

    # forward, network by network: remember each layer's input h_{l-1} and pre-activation a_l
    outputs, saved = [], []
    for k, net in enumerate(nets):
        h = x.data if shared_input else x.data[k]
        inputs, pre = [], []
        for l, (w, b) in enumerate(net):
            inputs.append(h)
            a = h @ w.data.T
            if has_bias:
                a += b.data
            if l < depth - 1:
                pre.append(a)
                h = leaky(a)
        outputs.append(a)
        saved.append((inputs, pre))
    out = np.stack(outputs)

    def vjp(g_all):
        per_param, gx = [], None
        for k, net in enumerate(nets):
            inputs, pre = saved[k]
            g = g_all[k]
            grads = [None] * depth
            for l in range(depth - 1, -1, -1):
                w = net[l][0].data
                grads[l] = (g.T @ inputs[l], column_sum(g) if has_bias else None)
                if l > 0:  # back through layer l and the LeakyReLU before it
                    g = g @ w
                    g = np.where(pre[l - 1] > 0, g, slope * g)
                elif x.requires_grad:
                    g = g @ w
                    gx_k = g
            for gw, gb in grads:
                per_param.append(gw)
                if has_bias:
                    per_param.append(gb)
            if x.requires_grad:
                if shared_input:
                    gx = gx_k if gx is None else gx + gx_k
                else:
                    gx = [gx_k] if gx is None else gx + [gx_k]
        if x.requires_grad and not shared_input:
            gx = np.stack(gx)
        return (gx, *per_param)

    params = tuple(p for net in nets for w, b in net for p in ((w, b) if has_bias else (w,)))
    return make_node(out, (x, *params), vjp, "leaky_mlp")
