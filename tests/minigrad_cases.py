"""Shared Hypothesis strategies and the table of minigrad operations under test.

Both the gradient tests (`tests/test_minigrad_ops.py`) and the torch parity tests
(`parity_tests/test_minigrad_parity.py`) iterate over these tables, so every op is
covered by both with the same input domains.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def _away_from(values: np.ndarray, point: float, gap: float) -> np.ndarray:
    """Push values closer than `gap` to a kink at `point` out to distance `gap`."""
    close = np.abs(values - point) < gap
    return np.where(close, point + np.where(values >= point, gap, -gap), values)


@st.composite
def arrays(draw, shape=None, low=-3.0, high=3.0, dtype=np.float64, kink=None, gap=1e-2):
    """A float array in [low, high], optionally kept `gap` away from a kink, and
    sometimes a non-contiguous (Fortran-ordered / transposed) view."""
    shape = draw(SHAPES) if shape is None else shape
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False)))
    if kink is not None:
        values = _away_from(values, kink, gap)
        values = np.clip(values, low, high)
    values = values.astype(dtype)
    if values.ndim >= 2 and draw(st.booleans()):
        values = np.ascontiguousarray(values.T).T  # same shape and values, strides transposed
    return values


# name -> (minigrad function, torch function, input domain as kwargs of `arrays`)
UNARY = {
    "neg": (lambda a: -a, lambda a: -a, dict()),
    "exp": (mg.exp, lambda a: a.exp(), dict(low=-4, high=4)),
    "log": (mg.log, lambda a: a.log(), dict(low=0.1, high=10)),
    "tanh": (mg.tanh, lambda a: a.tanh(), dict(low=-4, high=4)),
    "sigmoid": (mg.sigmoid, lambda a: a.sigmoid(), dict(low=-12, high=12)),
    "softplus": (mg.softplus, lambda a: __import__("torch").nn.functional.softplus(a),
                 dict(low=-30, high=30, kink=20.0, gap=1e-2)),
    "relu": (mg.relu, lambda a: a.relu(), dict(kink=0.0)),
    "leaky_relu": (mg.leaky_relu, lambda a: __import__("torch").nn.functional.leaky_relu(a, 0.01), dict(kink=0.0)),
    "silu": (mg.silu, lambda a: __import__("torch").nn.functional.silu(a), dict(low=-8, high=8)),
    "sqrt": (mg.sqrt, lambda a: a.sqrt(), dict(low=0.1, high=10)),
    "abs": (mg.abs, lambda a: a.abs(), dict(kink=0.0)),
    "square_pow": (lambda a: a ** 2, lambda a: a ** 2, dict()),
    "cube_pow": (lambda a: a ** 3.0, lambda a: a ** 3.0, dict()),
    "rsqrt_pow": (lambda a: a ** -0.5, lambda a: a ** -0.5, dict(low=0.2, high=5)),
    "scalar_rsub": (lambda a: 2.0 - a, lambda a: 2.0 - a, dict()),
    "scalar_rdiv": (lambda a: 1.5 / a, lambda a: 1.5 / a, dict(low=0.3, high=4)),
}

# name -> (minigrad function, torch function, domain of a, domain of b)
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, dict(), dict()),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, dict(), dict()),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, dict(), dict()),
    "div": (lambda a, b: a / b, lambda a, b: a / b, dict(), dict(low=0.3, high=3)),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, dict(low=0.3, high=3), dict(low=-2, high=2)),
}
