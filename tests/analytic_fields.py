"""Closed-form flow matching for a Gaussian target: ground truths for the tests.

Take noise ``x0 ~ N(0, I)``, data ``x1 ~ N(mu, diag(s^2))`` (independent) and the
linear path ``x_t = t x1 + (1 - t) x0`` (Eq. 14, sigma = 0). Then, per dimension:

* ``x_t ~ N(t mu, sigma_t^2)`` with ``sigma_t^2 = (1 - t)^2 + t^2 s^2``;
* the marginal velocity (the minimiser of Eq. 11 and Eq. 16) is the regression of
  ``u = x1 - x0`` on ``x_t``, which is linear for jointly Gaussian variables:
  ``Cov(x_t, u) = t s^2 - (1 - t)`` and ``E[u] = mu``, so

      u_t(x) = mu + c_t (x - t mu),      c_t = (t s^2 - (1 - t)) / sigma_t^2;

* its flow is ``phi_t(x0) = t mu + sigma_t x0`` (check: d phi / dt = mu + sigma_t' x0
  and ``sigma_t' / sigma_t = c_t``), so integrating from 0 to 1 maps x0 to ``mu + s x0``;
* the loss that no model can beat (Eq. 16, t ~ U[0, 1]) is ``E_t[Var(u | x_t)]``:

      Var(u | x_t) = s^2 + 1 - (t s^2 - (1 - t))^2 / sigma_t^2 = s^2 / sigma_t^2
      int_0^1 s^2 / ((s^2 + 1) t^2 - 2 t + 1) dt = s [arctan(s) + arctan(1 / s)] = pi s / 2

  per dimension (the primitive is ``s arctan(((s^2 + 1) t - 1) / s)``); summed over
  dimensions for the library's loss (squared norm, mean over the batch).

For this field the local error of the midpoint method vanishes at order h^3 (for
``y' = l(t) y`` with ``l = q' / (2 q)``, q quadratic, the h^3 coefficient
``l^3/6 + l''/24 + l l'/4`` is identically zero), so midpoint converges at order 3
here, not 2. To measure the generic orders the tests also use :func:`spiral_velocity`:
``x' = a(t) x + b(t) J x`` (J = rotation by 90 degrees), a = cos 3t, b = 1 + t^2, whose
flow from s to t is ``exp(A(t) - A(s)) R(B(t) - B(s)) x`` (A, B primitives, R a rotation).

``gaussian_velocity`` builds u_t from minigrad ops, so code that differentiates a
velocity field (divergence, exact likelihood) can use it; its divergence is
``sum_d c_t`` and the exact log-density of the flow at time t is ``log N(x; t mu, sigma_t^2)``.
"""
from __future__ import annotations

import numpy as np

import minigrad as mg

__all__ = [
    "marginal_std", "velocity_coefficient", "gaussian_velocity", "gaussian_velocity_torch",
    "gaussian_flow_map", "gaussian_marginal_log_prob", "gaussian_divergence",
    "gaussian_conditional_variance", "gaussian_irreducible_loss", "spiral_velocity", "spiral_flow",
]


def marginal_std(t, s):
    """``sigma_t = sqrt((1 - t)^2 + t^2 s^2)``, the std of x_t (per dimension)."""
    return np.sqrt((1 - t) ** 2 + (t * s) ** 2)


def velocity_coefficient(t, s):
    """``c_t = (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2)``: u_t(x) = mu + c_t (x - t mu)."""
    return (t * s * s - (1 - t)) / ((1 - t) ** 2 + (t * s) ** 2)


def gaussian_velocity(mu, s):
    """The exact marginal field ``v(x, t, y=None) -> mg.Tensor (N, D)`` for N(mu, s^2) data.

    mu: (D,); s: a float or (D,). x: ndarray or minigrad Tensor (N, D) (gradients flow
    to x through minigrad ops); t: float or (N,) array."""
    mu = np.asarray(mu, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)

    def v(x, t, y=None):
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(np.asarray(x))
        dtype = x.data.dtype
        t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
        c = velocity_coefficient(t, s).astype(dtype)
        return mu.astype(dtype) + c * (x - (t * mu).astype(dtype))

    return v


def gaussian_velocity_torch(mu, s):
    """The same field on torch tensors (for the parity tests)."""
    import torch

    def v(x, t, y=None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float64))
        s_t = torch.as_tensor(np.asarray(s, dtype=np.float64))
        c = (t * s_t * s_t - (1 - t)) / ((1 - t) ** 2 + (t * s_t) ** 2)
        return (mu_t + c * (x.to(torch.float64) - t * mu_t)).to(x.dtype)

    return v


def gaussian_flow_map(x0, t, mu, s):
    """``phi_t(x0) = t mu + sigma_t x0``: where the flow carries noise x0 by time t."""
    return t * np.asarray(mu) + marginal_std(t, np.asarray(s)) * x0


def gaussian_marginal_log_prob(x, t, mu, s):
    """``log N(x; t mu, sigma_t^2 I)`` summed over dimensions: the exact log p_t(x), shape (N,)."""
    x = np.asarray(x, dtype=np.float64)
    std = np.broadcast_to(marginal_std(t, np.asarray(s, dtype=np.float64)), x.shape[1:])
    z = (x - t * np.asarray(mu)) / std
    return -0.5 * np.sum(z * z + np.log(2 * np.pi * std * std), axis=1)


def gaussian_divergence(t, s, dim):
    """``div u_t = sum_d c_t`` (the same at every x): ``dim * c_t`` for scalar s."""
    c = velocity_coefficient(t, np.asarray(s, dtype=np.float64))
    return float(np.sum(np.broadcast_to(c, (dim,))))


def gaussian_conditional_variance(t, s):
    """``Var(x1 - x0 | x_t) = s^2 / sigma_t^2`` per dimension: the pointwise irreducible error."""
    return s * s / ((1 - t) ** 2 + (t * s) ** 2)


def gaussian_irreducible_loss(s, dim):
    """``E_{t ~ U[0,1]}[E |u - u_t(x_t)|^2] = sum_d pi s_d / 2``: the minimum of the FM loss."""
    return float(np.sum(np.broadcast_to(0.5 * np.pi * np.asarray(s, dtype=np.float64), (dim,))))


def spiral_velocity(x, t, y=None):
    """A generic non-autonomous 2D field: ``v(x, t) = cos(3t) x + (1 + t^2) J x`` (ndarray in/out)."""
    x = np.asarray(x.data if isinstance(x, mg.Tensor) else x)
    t = np.asarray(t, dtype=x.dtype).reshape(-1, 1)
    return np.cos(3 * t) * x + (1 + t * t) * np.stack([-x[:, 1], x[:, 0]], axis=1)


def spiral_flow(x, t_start, t_end):
    """Exact flow of :func:`spiral_velocity` from time t_start to t_end."""
    growth = np.exp((np.sin(3 * t_end) - np.sin(3 * t_start)) / 3)
    angle = (t_end + t_end ** 3 / 3) - (t_start + t_start ** 3 / 3)
    c, s = np.cos(angle), np.sin(angle)
    return growth * np.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], axis=1)
