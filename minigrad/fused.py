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

This module is minigrad's optional top floor: it builds on :mod:`minigrad.nn` (reading a
``Sequential``'s layers with :func:`leaky_mlp_layers`, or evaluating whole networks
with :func:`fused_leaky_mlps`), and nothing below it imports it.
"""
from __future__ import annotations

import numpy as np

from .nn import LeakyReLU, Linear, Sequential
from .ops import as_tensor
from .speed import column_sum, leaky_relu_derivative, leaky_relu_values
from .tensor import Tensor, make_node

__all__ = ["leaky_mlp", "fused_leaky_mlps", "leaky_mlp_layers", "leaky", "mlp_forward",
           "mlp_backward", "leaky_mlp_squared_error", "TwinMLP"]


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
                raise ValueError(
                    f"leaky_mlp: layer {l} of network {k} differs in shape from network 0")
    has_bias = nets[0][0][1] is not None and all(b is not None for net in nets for _, b in net)
    if any(b is None for net in nets for _, b in net) and has_bias:
        raise ValueError("leaky_mlp: biases must be present in every layer or in none")
    first_weight = nets[0][0][0]
    x = as_tensor(x, first_weight)
    if (x.shape[-1] != first_weight.shape[1] or x.ndim not in (2, 3)
            or (x.ndim == 3 and x.shape[0] != len(nets))):
        raise ValueError(f"leaky_mlp: input of shape {x.shape} does not fit {len(nets)} networks "
                         f"whose first weight is {first_weight.shape}")
    slope = first_weight.data.dtype.type(negative_slope)
    shared_input = x.ndim == 2
    arrays = [[(w.data, None if b is None else b.data) for w, b in net] for net in nets]
    runs = [mlp_forward(x.data if shared_input else x.data[k], net, slope)
            for k, net in enumerate(arrays)]
    out = np.stack([run[0] for run in runs])

    def vjp(g_all):
        per_param, gx = [], []
        for k, net in enumerate(nets):
            g_input, grads = mlp_backward(g_all[k], arrays[k], runs[k][1], slope, x.requires_grad)
            per_param.extend(grads if has_bias else grads[0::2])
            gx.append(g_input)
        if not x.requires_grad:
            return (None, *per_param)
        return (sum(gx[1:], gx[0]) if shared_input else np.stack(gx), *per_param)

    params = tuple(p for net in nets for w, b in net for p in ((w, b) if has_bias else (w,)))
    return make_node(out, (x, *params), vjp, "leaky_mlp")


def leaky_mlp_layers(net: Sequential) -> tuple[list, float]:
    """The ``(weight, bias)`` pairs and the LeakyReLU slope of a Sequential that alternates
    Linear and LeakyReLU layers and ends with a Linear layer (the exercise's nets)."""
    modules = list(net.children()) if isinstance(net, Sequential) else []
    linears, activations = modules[0::2], modules[1::2]
    if (not modules or len(modules) % 2 == 0 or not all(isinstance(m, Linear) for m in linears)
            or not all(isinstance(m, LeakyReLU) for m in activations)):
        raise ValueError(
            "expected a Sequential alternating Linear and LeakyReLU layers, ending with Linear")
    slopes = {m.negative_slope for m in activations}
    if len(slopes) > 1:
        raise ValueError(f"all LeakyReLU layers must share one slope, got {sorted(slopes)}")
    return [(m.weight, m.bias) for m in linears], (slopes.pop() if slopes else 0.01)


def fused_leaky_mlps(nets, x) -> Tensor:
    """``stack([net(x) for net in nets])`` for :class:`minigrad.nn.Sequential` networks of
    Linear and LeakyReLU layers, computed as one node by :func:`leaky_mlp`: same values,
    same gradients, far fewer operations."""
    layers, slopes = zip(*(leaky_mlp_layers(net) for net in nets))
    if len(set(slopes)) > 1:
        raise ValueError(f"the networks use different LeakyReLU slopes: {slopes}")
    return leaky_mlp(x, layers, slopes[0])


leaky = leaky_relu_values  # LeakyReLU on an array (minigrad.speed), the formulas' name


def mlp_forward(x: np.ndarray, layers, slope) -> tuple[np.ndarray, tuple]:
    """One network's forward pass on arrays: ``(out, saved)`` where `saved` holds each
    layer's input h_{l-1} and the pre-activations a_l that the backward pass needs.
    `layers`: ``(weight, bias)`` arrays (bias may be None)."""
    inputs, pre = [], []
    h = x
    last = len(layers) - 1
    for l, (w, b) in enumerate(layers):
        inputs.append(h)
        a = h @ w.T
        if b is not None:
            a += b
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
            g = g @ w
            g *= leaky_relu_derivative(pre[l - 1], slope)
        elif input_grad:
            g = g @ w
    return (g if input_grad else None), grads



def leaky_mlp_squared_error(x, layers, slope, target: np.ndarray) -> Tensor:
    """``sum_i ||net(x_i) - target_i||^2 / N``, the regression loss of flow matching (Eq. 16,
    squared norm per row, mean over the batch), with the network AND the loss as one node.

    forward:  out = net(x) (:func:`mlp_forward`),  r = out - target,  L = sum(r * r) / N
    backward: dL/dout = 2 r / N, formed as the layer-by-layer graph forms it: ``c r`` with
              ``c = g / N`` (the division's and the sum's gradients), doubled exactly (``r * r``
              reads r twice), so that every gradient equals that graph's bit for bit; then
              :func:`mlp_backward`.

    x: (N, in) Tensor or array (its gradient is returned when it requires one, e.g. a class
    embedding among the inputs); layers: ``(weight, bias)`` Tensors as from
    :func:`leaky_mlp_layers`; slope: the LeakyReLU slope (a scalar of the weights' dtype);
    target: (N, out) array. Returns the scalar loss."""
    x = as_tensor(x, layers[0][0])
    arrays = [(w.data, None if b is None else b.data) for w, b in layers]
    out, saved = mlp_forward(x.data, arrays, slope)
    residual = out - target
    n = residual.dtype.type(residual.shape[0])
    loss = np.asarray((residual * residual).sum() / n)

    def vjp(g):
        g_out = (g / n) * residual
        g_out = g_out + g_out
        g_x, grads = mlp_backward(g_out, arrays, saved, slope, x.requires_grad)
        return (g_x, *(g for g in grads if g is not None))

    params = tuple(p for w, b in layers for p in ((w,) if b is None else (w, b)))
    return make_node(loss, (x, *params), vjp, "leaky_mlp_squared_error")

class TwinMLP:
    """Two MLPs of identical shape that read the same input, run as ONE network twice as wide.

    The affine coupling's log-scale and shift networks (Eq. 3) both read ``z_l``. Stacking
    their layers block-diagonally gives a single network whose output is both outputs
    side by side, with the same values (the zero blocks add exact zeros)::

        W_1 = [A_1]        W_l = [A_l  0 ]        b_l = [a_l]        out = [net_A(x) | net_B(x)]
              [B_1],             [ 0  B_l],  (l > 1)    [b_l],

    so each layer is one matrix product instead of two: half the numpy calls, which is
    what a width-8 network costs. The gradient of ``W_l`` is ``g_l^T h_{l-1}`` as for any
    Linear layer (module docstring); its diagonal blocks are the gradients of ``A_l`` and
    ``B_l`` (the off-diagonal blocks are computed and discarded).

    ``layers()`` copies the current parameter values into the block arrays (they change
    at every optimiser step; the copies are small) and returns them for
    :func:`mlp_forward` / :func:`mlp_backward`; ``split_gradients`` turns the block
    gradients back into one gradient per parameter.
    """

    def __init__(self, layers_a, layers_b):
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        if len(self.layers_a) != len(self.layers_b) or not self.layers_a:
            raise ValueError(
                "TwinMLP needs two networks with the same number of layers (at least one)")
        for (wa, ba), (wb, bb) in zip(self.layers_a, self.layers_b):
            if wa.shape != wb.shape or (ba is None) != (bb is None):
                raise ValueError(f"TwinMLP: layers of shapes {wa.shape} and {wb.shape} "
                                 "(or bias presence) differ")
        self._blocks = None

    def parameters(self) -> list:
        """Network A's parameters, then B's, layer by layer (weight, then bias if any)."""
        return [p for layers in (self.layers_a, self.layers_b) for w, b in layers for p in (w, b)
                if p is not None]

    def layers(self) -> list:
        """``[(W_l, b_l)]`` block arrays holding the current parameter values."""
        dtype = self.layers_a[0][0].data.dtype
        if self._blocks is None or self._blocks[0][0].dtype != dtype:
            self._blocks = []
            for l, (w, b) in enumerate(self.layers_a):
                out, inp = w.shape
                weight = np.zeros((2 * out, inp if l == 0 else 2 * inp), dtype)
                self._blocks.append((weight, None if b is None else np.zeros(2 * out, dtype)))
        pairs = zip(self.layers_a, self.layers_b, self._blocks)
        for l, ((wa, ba), (wb, bb), (weight, bias)) in enumerate(pairs):
            out, inp = wa.shape
            weight[:out, :inp] = wa.data
            weight[out:, (0 if l == 0 else inp):] = wb.data
            if bias is not None:
                bias[:out], bias[out:] = ba.data, bb.data
        return self._blocks

    def split_gradients(self, grads: list) -> list:
        """:func:`mlp_backward`'s ``[dW_1, db_1, ...]`` of the block network -> the gradients
        of :meth:`parameters`, in that order (views into the block gradients)."""
        of_a, of_b = [], []
        for l, (w, b) in enumerate(self.layers_a):
            out, inp = w.shape
            g_weight, g_bias = grads[2 * l], grads[2 * l + 1]
            of_a.append(g_weight[:out, :inp])
            of_b.append(g_weight[out:, (0 if l == 0 else inp):])
            if b is not None:
                of_a.append(g_bias[:out])
                of_b.append(g_bias[out:])
        return of_a + of_b
