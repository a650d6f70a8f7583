"""Toy data sets with exact densities: the Olympic rings (2D) and a 1D bimodal mixture.

Everything here is plain numpy, so the PyTorch twin (``flows_torch``) imports this
module rather than re-implementing it: both backends train on bit-identical data.

Olympic rings (the exercise's data, Sec. 2.1)
=============================================
The course exercise samples its training points "from the Olympic logo". We build
that distribution from its geometry, so that we also know its density exactly.

* Five rings, labelled 0..4 in the logo's colour order blue, black, red, yellow,
  green (:data:`RING_COLORS`). Centres (in *logo coordinates*)::

      (0, 0)   (2, 0)   (4, 0)        <- top row: blue, black, red
          (1, -1)   (3, -1)           <- bottom row: yellow, green

* Each ring is an *annulus* (a thick circle) with midline radius ``R = 1`` and
  thickness ``w = 0.25``. We read "thickness" as the full width of the band, so the
  annulus is ``{p : r_in <= |p - c_k| <= r_out}`` with ``r_in = R - w/2 = 0.875`` and
  ``r_out = R + w/2 = 1.125``. Its area is
  ``A = pi (r_out^2 - r_in^2) = 2 pi R w = pi / 2``.
* The label ``k`` is uniform on {0, ..., 4} and, given ``k``, the point is uniform
  over the *area* of annulus ``k``. Uniform over area is not "uniform radius":
  the ring's outer part has more area than its inner part, so the radius must be
  drawn with density proportional to ``r``. Inverting the CDF
  ``F(r) = (r^2 - r_in^2) / (r_out^2 - r_in^2)`` gives
  ``r = sqrt(U (r_out^2 - r_in^2) + r_in^2)`` with ``U ~ Uniform[0, 1)``, and the
  angle is ``theta ~ Uniform[0, 2 pi)``.
* The rings interlock, as in the logo, so annuli overlap: where ``m`` annuli cover a
  point, the density there is ``m / (5 A)`` (a mixture of uniforms adds up). With
  this geometry ``m`` reaches 3: around (1, 0) the blue, black and yellow rings
  meet (the two top rings touch there, the yellow one passes through), and
  likewise black, red and green around (3, 0).

Standardisation (fixed constants)
---------------------------------
Models train best on data of roughly zero mean and unit variance, so the samples
are mapped to *model coordinates* ``z = (p - RINGS_MEAN) / RINGS_STD`` (per axis).
The constants are not estimated from samples: they are the exact mean and
standard deviation of the mixture, computed in closed form from the geometry.
Write a sample as ``p = c_K + r (cos theta, sin theta)`` with ``K`` the ring. Then

* ``E[p] = mean_k c_k`` because each annulus is symmetric about its centre, so
  ``RINGS_MEAN = (2, -0.4)``;
* ``Var[p_a] = Var_k[c_{k,a}] + E[r^2 cos^2 theta]`` (law of total variance; the
  offset has mean 0 and is independent of ``K``). Since ``r^2`` is uniform on
  ``[r_in^2, r_out^2]`` (that is what "uniform over area" means),
  ``E[r^2] = (r_in^2 + r_out^2) / 2`` and ``E[cos^2 theta] = 1/2``, so the ring's
  own contribution is ``(r_in^2 + r_out^2) / 4 = 0.5078125`` on each axis.
  With ``Var_k[c_x] = 2`` and ``Var_k[c_y] = 0.24`` this gives
  ``RINGS_STD = (sqrt(2.5078125), sqrt(0.7478125)) ~= (1.5836, 0.8648)``.

The map ``p -> z`` is affine with Jacobian ``diag(1 / RINGS_STD)``, so by the change
of variables formula (the same one behind Eq. 2 of the exercise)
``log p_Z(z) = log p_P(p) + sum_a log RINGS_STD[a]``, where ``p = z * RINGS_STD + RINGS_MEAN``:
the density in model coordinates is *higher* by the factor ``prod RINGS_STD`` because
the same mass sits on a smaller area. :func:`olympic_rings_log_prob` returns this
exact log-density, so a model's held-out negative log-likelihood can be compared
with the data's own entropy (:func:`data_entropy`): their difference
``NLL - H = KL(data || model) >= 0`` measures how far the model is from the data.

Coordinates used by the exercise's bonus question
-------------------------------------------------
The bonus of Sec. 4.3 asks a flow-matching model to output "the point (4, 5)". We
take that point in **model (standardised) coordinates**, the space the students'
models see and sample in, i.e. ``z = (4, 5)``. In logo coordinates it is
``to_data_coords([[4, 5]]) ~= (8.33, 3.92)``, far outside every ring either way.

1D bimodal (seeds/002)
======================
A two-component Gaussian mixture used by the 1D introduction: weights 0.55 / 0.45,
means -0.85 / 1.5, standard deviations 0.65 / 0.25 (:func:`bimodal_1d`,
:func:`bimodal_1d_log_prob`, :func:`bimodal_1d_pdf`).

Conventions: randomness enters only through an ``np.random.Generator`` argument;
bad input raises :class:`ValueError` naming what was wrong.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "RING_COLORS",
    "RING_CENTERS",
    "RING_RADIUS",
    "RING_THICKNESS",
    "RING_INNER_RADIUS",
    "RING_OUTER_RADIUS",
    "RING_AREA",
    "RINGS_MEAN",
    "RINGS_STD",
    "RINGS_LOG_JACOBIAN",
    "BOUNDARY_TOL",
    "olympic_rings",
    "olympic_rings_log_prob",
    "ring_membership",
    "on_ring",
    "to_data_coords",
    "from_data_coords",
    "data_entropy",
    "BIMODAL_WEIGHTS",
    "BIMODAL_MEANS",
    "BIMODAL_STDS",
    "BIMODAL_MEAN",
    "BIMODAL_VAR",
    "bimodal_1d",
    "bimodal_1d_log_prob",
    "bimodal_1d_pdf",
]


def _frozen(a) -> np.ndarray:
    """A float64 copy of ``a`` that cannot be modified (module constants)."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------
# Geometry of the logo (logo coordinates)
# ---------------------------------------------------------------------------

#: Matplotlib colour of each ring, indexed by label 0..4 (the logo's order).
RING_COLORS: tuple[str, ...] = ("blue", "black", "red", "yellow", "green")

#: Ring centres in logo coordinates, row k is ring k (same order as RING_COLORS).
RING_CENTERS = _frozen([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [1.0, -1.0], [3.0, -1.0]])

#: Midline radius ``R`` and full band width ``w`` of every ring.
RING_RADIUS = 1.0
RING_THICKNESS = 0.25
#: The annulus is ``RING_INNER_RADIUS <= |p - c_k| <= RING_OUTER_RADIUS``.
RING_INNER_RADIUS = RING_RADIUS - RING_THICKNESS / 2.0  # 0.875
RING_OUTER_RADIUS = RING_RADIUS + RING_THICKNESS / 2.0  # 1.125
#: Area of one annulus, ``pi (r_out^2 - r_in^2)`` (= 2 pi R w = pi / 2).
RING_AREA = float(np.pi * (RING_OUTER_RADIUS**2 - RING_INNER_RADIUS**2))

_NUM_RINGS = RING_CENTERS.shape[0]

# Second moment of the within-ring offset along one axis:
# E[(r cos theta)^2] = E[r^2] / 2 = (r_in^2 + r_out^2) / 4, because r^2 ~ U[r_in^2, r_out^2].
_OFFSET_AXIS_VAR = (RING_INNER_RADIUS**2 + RING_OUTER_RADIUS**2) / 4.0

#: Exact mean of the rings mixture per axis (logo coordinates): the mean centre.
RINGS_MEAN = _frozen(RING_CENTERS.mean(axis=0))
#: Exact standard deviation per axis: sqrt(Var_k[centre] + (r_in^2 + r_out^2) / 4).
RINGS_STD = _frozen(np.sqrt(RING_CENTERS.var(axis=0) + _OFFSET_AXIS_VAR))
#: log|det d z / d p| of the standardisation z = (p - mean) / std, i.e. -sum(log std).
RINGS_LOG_JACOBIAN = float(-np.sum(np.log(RINGS_STD)))

#: Points within this distance (logo units) outside a ring's band still count as
#: on the ring. A float32 sample, once rounded, can sit up to ~1.1e-7 outside the
#: annulus it was drawn from; without this margin a few samples in a million would
#: get log-density -inf. The extra mass it adds is below 1e-5 (boundary length
#: 20 pi times 1e-6 times density 1 / (5 A)). For float16 inputs the margin is
#: widened to 8 ulps of that dtype.
BOUNDARY_TOL = 1e-6


# ---------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------


def _check_n(n) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n must be a positive integer, got {n!r} of type {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )
    return rng


def _check_float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be a numpy floating dtype, got {dtype!r}") from err
    if dt.kind != "f":
        raise ValueError(f"dtype must be a numpy floating dtype, got {dt}")
    return dt


def _as_points(x, dim: int, name: str = "x") -> np.ndarray:
    """Return ``x`` as a real array of shape (N, dim); ValueError otherwise."""
    try:
        arr = np.asarray(x)
    except Exception as err:  # e.g. ragged nested lists
        raise ValueError(f"{name} must be an array of shape (N, {dim}): {err}") from err
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (at row {int(np.argwhere(np.isnan(arr))[0, 0])})")
    return arr


def _result_dtype(arr: np.ndarray) -> np.dtype:
    """Floating inputs keep their dtype; integer/bool inputs give float64."""
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)


# ---------------------------------------------------------------------------
# Olympic rings
# ---------------------------------------------------------------------------


def to_data_coords(x) -> np.ndarray:
    """Map standardised model coordinates to logo coordinates: ``p = x * RINGS_STD + RINGS_MEAN``.

    ``x`` has shape (N, 2). Logo coordinates are those in which ring ``k`` is
    centred at ``RING_CENTERS[k]`` with radius 1. The result keeps ``x``'s
    floating dtype (float64 for integer input).

    The exercise's bonus point "(4, 5)" is taken in model coordinates, so
    ``to_data_coords([[4, 5]])`` (about (8.33, 3.92)) is where it sits in the logo.
    """
    arr = _as_points(x, 2)
    out = arr.astype(np.float64) * RINGS_STD + RINGS_MEAN
    return out.astype(_result_dtype(arr), copy=False)


def from_data_coords(p) -> np.ndarray:
    """Map logo coordinates to standardised model coordinates: ``x = (p - RINGS_MEAN) / RINGS_STD``.

    The inverse of :func:`to_data_coords`; this is the map applied to every sample
    of :func:`olympic_rings`.
    """
    arr = _as_points(p, 2, name="p")
    out = (arr.astype(np.float64) - RINGS_MEAN) / RINGS_STD
    return out.astype(_result_dtype(arr), copy=False)


def olympic_rings(n: int, rng: np.random.Generator, dtype=np.float32):
    """Draw ``n`` points from the Olympic rings (Sec. 2.1), in standardised coordinates.

    Returns ``(points, labels)``: ``points`` has shape (n, 2) and dtype ``dtype``;
    ``labels`` has shape (n,), dtype int64, and holds the ring index 0..4 (colours
    :data:`RING_COLORS`). Unconditional models use ``points``; class-conditional
    models also use ``labels`` (the exercise's ``create_olympic_rings``).

    Sampling, in logo coordinates, for each point independently:

    1. ``k ~ Uniform{0, ..., 4}`` (each ring equally likely);
    2. ``theta ~ Uniform[0, 2 pi)``;
    3. ``r = sqrt(U (r_out^2 - r_in^2) + r_in^2)`` with ``U ~ Uniform[0, 1)``: the
       inverse CDF of the radius of a point uniform over the annulus' area
       (density of ``r`` proportional to ``r``);
    4. ``p = c_k + r (cos theta, sin theta)``;

    then ``x = (p - RINGS_MEAN) / RINGS_STD`` with the exact mixture moments (see
    the module docstring). The random numbers are drawn from ``rng`` in the order
    labels, angles, radii (each as one vector of length ``n``), computed in float64
    and rounded to ``dtype`` at the end.
    """
    n = _check_n(n)
    rng = _check_rng(rng)
    dt = _check_float_dtype(dtype)
    labels = rng.integers(0, _NUM_RINGS, size=n, dtype=np.int64)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    u = rng.random(size=n)
    r = np.sqrt(u * (RING_OUTER_RADIUS**2 - RING_INNER_RADIUS**2) + RING_INNER_RADIUS**2)
    p = RING_CENTERS[labels] + r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    x = (p - RINGS_MEAN) / RINGS_STD
    return x.astype(dt), labels


def _boundary_tol(arr: np.ndarray) -> float:
    if arr.dtype.kind == "f":
        return max(BOUNDARY_TOL, 8.0 * float(np.finfo(arr.dtype).eps))
    return BOUNDARY_TOL


def _membership(arr: np.ndarray) -> np.ndarray:
    """(N, 5) bool: is each (validated) standardised point inside each closed annulus."""
    p = arr.astype(np.float64) * RINGS_STD + RINGS_MEAN  # back to logo coordinates
    d = p[:, None, :] - RING_CENTERS[None, :, :]  # (N, 5, 2)
    dist = np.hypot(d[..., 0], d[..., 1])  # (N, 5) distance to each centre
    tol = _boundary_tol(arr)
    return (dist >= RING_INNER_RADIUS - tol) & (dist <= RING_OUTER_RADIUS + tol)


def ring_membership(x) -> np.ndarray:
    """Which rings each standardised point lies on: a bool matrix of shape (N, 5).

    Entry ``[i, k]`` is True when ``x[i]`` (model coordinates) lies on the closed
    annulus of ring ``k``, i.e. ``r_in <= |p_i - c_k| <= r_out`` with
    ``p_i = to_data_coords(x)[i]`` (up to :data:`BOUNDARY_TOL`). Where rings
    interlock a point may lie on two or three rings; off the logo a row is all False.
    """
    return _membership(_as_points(x, 2))


def on_ring(x, labels) -> np.ndarray:
    """Whether each standardised point lies on the annulus of its own ring: bool (N,).

    ``labels[i]`` in 0..4 names the ring that point ``i`` should lie on. Used to
    score class-conditional samples: ``on_ring(samples, labels).mean()`` is the
    share of samples that landed on the ring they were asked for (Sec. 4.3,
    conditional Q2/Q3). A point where rings overlap counts for each of them.
    """
    arr = _as_points(x, 2)
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != arr.shape[0]:
        raise ValueError(
            f"labels must have shape ({arr.shape[0]},) to match x, got shape {lab.shape}"
        )
    if lab.size and lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= _NUM_RINGS):
        raise ValueError(f"labels must be ring indices in 0..{_NUM_RINGS - 1}, got values outside")
    member = _membership(arr)
    return member[np.arange(arr.shape[0]), lab.astype(np.intp)]


def olympic_rings_log_prob(x) -> np.ndarray:
    """Exact log-density of :func:`olympic_rings` at standardised points ``x`` of shape (N, 2).

    In logo coordinates the density is a mixture of five uniform annuli,

        p_P(p) = sum_k (1/5) * 1[p on annulus k] / A,     A = pi (r_out^2 - r_in^2),

    i.e. ``m(p) / (5 A)`` where ``m(p)`` counts the annuli covering ``p`` (0 to 3).
    The data live in model coordinates ``x = (p - RINGS_MEAN) / RINGS_STD``; by the
    change of variables formula (as in Eq. 2)

        log p_X(x) = log p_P(p) + log|det dp/dx| = log(m / (5 A)) + sum_a log RINGS_STD[a].

    Equivalently ``log p_P(p) - RINGS_LOG_JACOBIAN``. Outside the logo ``m = 0`` and the
    result is ``-inf`` (the data have no mass there: any model's NLL on such a point
    is irrelevant to KL(data || model)). Each annulus is taken closed and widened
    by :data:`BOUNDARY_TOL` so that rounded samples stay in the support.

    Returns shape (N,), in ``x``'s floating dtype (float64 for integer input).
    ``+-inf`` coordinates are simply off the logo; NaN raises ``ValueError``.
    """
    arr = _as_points(x, 2)
    count = _membership(arr).sum(axis=1)
    with np.errstate(divide="ignore"):
        logp = np.log(count / (_NUM_RINGS * RING_AREA)) - RINGS_LOG_JACOBIAN
    return logp.astype(_result_dtype(arr), copy=False)


# ---------------------------------------------------------------------------
# Entropy of a data distribution (for KL gaps)
# ---------------------------------------------------------------------------


def data_entropy(
    log_prob_fn=olympic_rings_log_prob,
    sampler=olympic_rings,
    n: int = 200_000,
    rng: np.random.Generator | None = None,
):
    """Monte Carlo estimate of the differential entropy ``H = E_x[-log p(x)]`` of a data set.

    Draws ``x_1..x_n = sampler(n, rng)`` (if the sampler returns a tuple, such as
    ``(points, labels)``, its first element is used) and returns
    ``(estimate, standard_error)`` with

        estimate       = mean_i(-log p(x_i)),
        standard_error = std_i(-log p(x_i)) / sqrt(n)      (sample std, ddof = 1).

    Why it matters: a model's held-out NLL ``E_data[-log q(x)]`` is the cross-entropy
    ``H(p, q) = H(p) + KL(p || q)``. Subtracting this estimate turns the NLL into
    the KL gap ``NLL - H = KL(data || model) >= 0``, which is 0 only for a perfect
    model; the NLL alone is not comparable across data sets. Entropies are in nats
    and depend on the coordinates (the rings' value is for standardised points).

    Works for any pair with exact densities, e.g.
    ``data_entropy(bimodal_1d_log_prob, bimodal_1d, rng=rng)``. ``rng`` defaults to a
    fresh, unseeded ``np.random.default_rng()``; pass one to be reproducible.
    Raises ``ValueError`` if ``n < 2`` or if ``log_prob_fn`` gives a non-finite value on
    a sample (then sampler and density do not describe the same distribution).
    """
    n = _check_n(n)
    if n < 2:
        raise ValueError(f"n must be at least 2 to estimate a standard error, got {n}")
    if rng is None:
        rng = np.random.default_rng()
    samples = sampler(n, rng)
    if isinstance(samples, tuple):
        samples = samples[0]
    logp = np.asarray(log_prob_fn(samples), dtype=np.float64).reshape(-1)
    if logp.shape[0] != n:
        raise ValueError(f"log_prob_fn returned {logp.shape[0]} values for {n} samples")
    if not np.all(np.isfinite(logp)):
        bad = int(np.count_nonzero(~np.isfinite(logp)))
        raise ValueError(
            f"log_prob_fn is not finite on {bad} of {n} samples: sampler and density disagree"
        )
    nll = -logp
    return float(nll.mean()), float(nll.std(ddof=1) / np.sqrt(n))


# ---------------------------------------------------------------------------
# 1D bimodal mixture (seeds/002)
# ---------------------------------------------------------------------------

#: Mixture weights, means and standard deviations of the 1D bimodal target.
BIMODAL_WEIGHTS = _frozen([0.55, 0.45])
BIMODAL_MEANS = _frozen([-0.85, 1.5])
BIMODAL_STDS = _frozen([0.65, 0.25])
#: Exact mixture mean  sum_k w_k mu_k  (= 0.2075).
BIMODAL_MEAN = float(np.sum(BIMODAL_WEIGHTS * BIMODAL_MEANS))
#: Exact mixture variance  sum_k w_k (sigma_k^2 + mu_k^2) - mean^2  (law of total variance).
BIMODAL_VAR = float(
    np.sum(BIMODAL_WEIGHTS * (BIMODAL_STDS**2 + BIMODAL_MEANS**2)) - BIMODAL_MEAN**2
)


def bimodal_1d(n: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """Draw ``n`` points of the 1D bimodal mixture, shape (n, 1).

    Ancestral sampling: pick component ``k`` with probability ``w_k`` (0.55 / 0.45),
    then ``x = mu_k + sigma_k * eps`` with ``eps ~ N(0, 1)``. Draws from ``rng`` in
    the order component uniforms, normals; float64 rounded to ``dtype``.
    """
    n = _check_n(n)
    rng = _check_rng(rng)
    dt = _check_float_dtype(dtype)
    comp = (rng.random(size=n) >= BIMODAL_WEIGHTS[0]).astype(np.intp)  # 1 w.p. 0.45
    eps = rng.standard_normal(size=n)
    x = BIMODAL_MEANS[comp] + BIMODAL_STDS[comp] * eps
    return x[:, None].astype(dt)


def _bimodal_log_pdf_flat(x: np.ndarray) -> np.ndarray:
    """log of sum_k w_k N(x; mu_k, sigma_k^2) for a float64 array of any shape.

    Uses the log-sum-exp trick: with a_k = log w_k + log N(x; mu_k, sigma_k^2) and
    m = max_k a_k, log sum_k exp(a_k) = m + log sum_k exp(a_k - m). Every term
    exp(a_k - m) is <= 1 and one equals 1, so nothing overflows and far in the
    tails (where both densities underflow to 0) the result stays finite.
    """
    z = (x[..., None] - BIMODAL_MEANS) / BIMODAL_STDS  # (..., 2)
    a = np.log(BIMODAL_WEIGHTS) - np.log(BIMODAL_STDS) - 0.5 * np.log(2.0 * np.pi) - 0.5 * z**2
    m = a.max(axis=-1)
    finite = np.isfinite(m)  # m = -inf only for x = +-inf
    m_safe = np.where(finite, m, 0.0)
    with np.errstate(divide="ignore"):  # log(0) only where x = +-inf, replaced below
        out = m_safe + np.log(np.exp(a - m_safe[..., None]).sum(axis=-1))
    return np.where(finite, out, -np.inf)


def bimodal_1d_log_prob(x) -> np.ndarray:
    """Exact log-density of :func:`bimodal_1d` at points ``x`` of shape (N, 1); returns (N,).

    ``log p(x) = log sum_k w_k N(x; mu_k, sigma_k^2)`` computed with a stable
    log-sum-exp. ``+-inf`` gives ``-inf``; NaN raises ``ValueError``. The result keeps
    ``x``'s floating dtype (float64 for integer input).
    """
    arr = _as_points(x, 1)
    out = _bimodal_log_pdf_flat(arr[:, 0].astype(np.float64))
    return out.astype(_result_dtype(arr), copy=False)


def bimodal_1d_pdf(x) -> np.ndarray:
    """Density of the 1D bimodal mixture for an array of any shape (handy for plots).

    ``bimodal_1d_pdf(np.linspace(-3, 3, 1000))`` gives the curve of seeds/002's
    ``mixture_pdf``. Returns float64 of the same shape; NaN raises ``ValueError``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"x must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError("x contains NaN")
    return np.exp(_bimodal_log_pdf_flat(arr))
