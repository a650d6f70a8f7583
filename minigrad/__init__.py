"""minigrad: a tiny, readable reverse-mode autodiff engine on numpy.

    >>> import numpy as np, minigrad as mg
    >>> x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    array([2., 4.])

Modules: :mod:`minigrad.tensor` (the Tensor, its operators, and backward),
:mod:`minigrad.ops` (every operation with its vector-Jacobian product; ``a + b`` is
``ops.add(a, b)``), :mod:`minigrad.speed` (the speed tricks the maths keeps, each with its
measurement), :mod:`minigrad.nn` (layers with torch's names), :mod:`minigrad.optim` (SGD,
Adam, AdamW, cosine schedule), :mod:`minigrad.gradcheck`. They build upward: tensor and
speed -> ops -> nn -> optim, gradcheck (tensor's operators call ops, which tensor imports
last). :mod:`minigrad.fused`
(whole LeakyReLU networks as one graph node, for speed) is an optional top floor on
``nn``; nothing below imports it, and ``import minigrad`` does not load it.
"""
from . import nn, ops, optim
from .gradcheck import GradcheckError, gradcheck
from .ops import (abs, add, astype, concat, div, exp, getitem, leaky_relu, linear, log, matmul,
                  mean, mul, neg, power, relu, reshape, sigmoid, silu, softplus, split, sqrt, stack,
                  sub, sum, tanh, transpose, where)
from .ops import cumsum, searchsorted, softmax, take_along_axis
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad

__all__ = [
    "Tensor", "no_grad", "enable_grad", "is_grad_enabled", "nn", "optim", "ops", "gradcheck",
    "GradcheckError", "add", "sub", "mul", "div", "neg", "power", "matmul", "linear", "exp", "log",
    "tanh", "sigmoid", "softplus", "relu", "leaky_relu", "silu", "sqrt", "abs", "sum", "mean",
    "reshape", "transpose", "getitem", "concat", "stack", "split", "where", "astype", "softmax",
    "cumsum", "take_along_axis", "searchsorted",
]
