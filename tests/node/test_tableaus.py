"""Checks of the builtin Butcher tableaus, independent of any solver engine.

* structure: stage counts, FSAL form, evaluations per step;
* algebraic order: the rooted-tree order conditions of ``b``, of the embedded ``b_hat`` and of
  the continuous extension ``b(theta)``, generated for all trees up to order 9;
* observed order: a tiny numpy Runge-Kutta loop on a 2-D nonlinear problem with a known
  (manufactured) solution, by step halving, for the propagated solution and the dense output;
* validation: malformed tableaus raise ``ValueError``.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from node.methods import available_methods, get_tableau
from node.tableau import ButcherTableau

BUILTIN = [
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "adaptive_heun",
    "fehlberg2",
    "bosh3",
    "dopri5",
    "tsit5",
    "dopri8",
]
ADAPTIVE = {"adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"}
EVALUATIONS_PER_STEP = {
    "euler": 1,
    "midpoint": 2,
    "heun2": 2,
    "heun3": 3,
    "rk4": 4,
    "adaptive_heun": 1,
    "fehlberg2": 2,
    "bosh3": 3,
    "dopri5": 6,
    "tsit5": 6,
    "dopri8": 13,
}
# Order of the embedded solution b_hat = b - b_error.
EMBEDDED_ORDER = {
    "adaptive_heun": 1,
    "fehlberg2": 1,
    "bosh3": 2,
    "dopri5": 4,
    "tsit5": 4,
    "dopri8": 7,
}
# Order of the continuous extension b(theta) (local error O(h^(p+1))), measured below.
DENSE_ORDER = {"dopri5": 4, "tsit5": 4, "dopri8": 5}


# --------------------------------------------------------------------------------------------
# Rooted trees and elementary weights
# --------------------------------------------------------------------------------------------
# A rooted tree is the (canonically ordered) tuple of its root's subtrees; the leaf is ().


@cache
def trees(n: int) -> tuple[tuple, ...]:
    """All rooted trees with ``n`` vertices (1, 1, 2, 4, 9, 20, 48, 115, 286 for n = 1..9)."""
    if n == 1:
        return ((),)
    pool = [t for k in range(1, n) for t in trees(k)]
    sizes = [order_of(t) for t in pool]
    found = []

    def extend(start: int, remaining: int, kids: tuple) -> None:
        if remaining == 0:
            found.append(kids)
            return
        for i in range(start, len(pool)):  # non-decreasing pool index: each multiset once
            if sizes[i] <= remaining:
                extend(i, remaining - sizes[i], kids + (pool[i],))

    extend(0, n - 1, ())
    return tuple(found)


@cache
def order_of(tree: tuple) -> int:
    return 1 + sum(order_of(child) for child in tree)


@cache
def density(tree: tuple) -> int:
    """gamma(t): the order condition of tree t reads b . Phi(t) = 1 / gamma(t)."""
    g = order_of(tree)
    for child in tree:
        g *= density(child)
    return g


def coupling_matrix(tab: ButcherTableau) -> np.ndarray:
    a = np.zeros((tab.stages, tab.stages))
    for i, row in enumerate(tab.a):
        a[i, : len(row)] = row
    return a


def elementary_weights(tab: ButcherTableau, n: int) -> list[tuple[tuple, np.ndarray]]:
    """(tree, Phi(tree)) for all trees of order n, Phi the stage vector of the tree."""
    a = coupling_matrix(tab)
    cache: dict[tuple, np.ndarray] = {}

    def phi(tree: tuple) -> np.ndarray:
        if tree not in cache:
            v = np.ones(tab.stages)
            for child in tree:
                v = v * (a @ phi(child))
            cache[tree] = v
        return cache[tree]

    return [(t, phi(t)) for t in trees(n)]


def max_residual(tab: ButcherTableau, weights, n: int) -> float:
    w = np.asarray(weights, dtype=float)
    return max(abs(w @ phi - 1.0 / density(t)) for t, phi in elementary_weights(tab, n))


def dense_residual(tab: ButcherTableau, n: int) -> float:
    """Residual of sum_i b_i(theta) Phi_i(t) = theta^n / gamma(t), coefficient-wise in theta."""
    d = np.array(tab.dense)  # (stages, degree)
    worst = 0.0
    for t, phi in elementary_weights(tab, n):
        target = np.zeros(d.shape[1])
        if n <= d.shape[1]:
            target[n - 1] = 1.0 / density(t)
        worst = max(worst, float(np.abs(d.T @ phi - target).max()))
    return worst


def b_hat(tab: ButcherTableau) -> np.ndarray:
    return np.array(tab.b) - np.array(tab.b_error)


TOL = 1e-12  # order conditions hold to rounding of the float64 coefficients
BROKEN = 1e-8  # a condition counts as violated above this


def test_tree_counts():
    assert [len(trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    assert len(set(trees(7))) == len(trees(7))


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


def test_registry_lists_builtins():
    assert available_methods()[: len(BUILTIN)] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_structure(name):
    tab = get_tableau(name)
    assert isinstance(tab, ButcherTableau)
    assert tab.name == name
    assert tab.source
    assert tab.adaptive == (name in ADAPTIVE)
    assert tab.evaluations_per_step == EVALUATIONS_PER_STEP[name]
    if name in ADAPTIVE:
        assert tab.reuses_last_stage and tab.c[-1] == 1.0
        if name in ("adaptive_heun", "fehlberg2"):
            # torchdiffeq's pseudo-FSAL pairs: the reused stage is not at y1.
            assert tab.reuse_last_stage and not tab.fsal
        else:
            assert tab.fsal and tab.b[-1] == 0.0
            assert tab.a[-1] == tab.b[:-1]
    else:
        assert tab.b_error is None
        assert tab.dense is None
        assert not tab.fsal
    assert (tab.dense is not None) == (name in DENSE_ORDER)


def test_default_method_is_dopri5():
    assert get_tableau(None) is get_tableau("dopri5")


# --------------------------------------------------------------------------------------------
# Algebraic order conditions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_order_conditions(name):
    tab = get_tableau(name)
    for n in range(1, tab.order + 1):
        assert max_residual(tab, tab.b, n) < TOL, f"order-{n} condition violated"
    # ... and the stated order is exact.
    assert max_residual(tab, tab.b, tab.order + 1) > BROKEN


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_embedded_order_conditions(name):
    tab = get_tableau(name)
    bh = b_hat(tab)
    order = EMBEDDED_ORDER[name]
    assert order == tab.order - 1
    for n in range(1, order + 1):
        assert max_residual(tab, bh, n) < TOL, f"order-{n} condition of b_hat violated"
    assert max_residual(tab, bh, order + 1) > BROKEN


@pytest.mark.parametrize("name", sorted(DENSE_ORDER))
def test_dense_order_conditions(name):
    tab = get_tableau(name)
    order = DENSE_ORDER[name]
    for n in range(1, order + 1):
        assert dense_residual(tab, n) < 1e-11, f"order-{n} condition of b(theta) violated"
    assert dense_residual(tab, order + 1) > BROKEN


@pytest.mark.parametrize("name", sorted(DENSE_ORDER))
def test_dense_output_matches_step_ends(name):
    """b(0) = 0, b(1) = b, b'(0) = e_0 and b'(1) = e_{S-1}: C1 across steps for FSAL tableaus."""
    tab = get_tableau(name)
    d = np.array(tab.dense)
    powers = np.arange(1, d.shape[1] + 1)
    np.testing.assert_allclose(d.sum(axis=1), tab.b, rtol=0, atol=1e-11)
    first, last = np.zeros(tab.stages), np.zeros(tab.stages)
    first[0], last[-1] = 1.0, 1.0
    np.testing.assert_allclose(d[:, 0], first, rtol=0, atol=1e-15)
    np.testing.assert_allclose(d @ powers, last, rtol=0, atol=1e-9)


def test_dopri5_dense_matches_torchdiffeq_midpoint():
    """At theta = 1/2 the continuous extension is torchdiffeq's DPS_C_MID (Shampine 1986)."""
    d = np.array(get_tableau("dopri5").dense)
    mid = np.array(
        [
            6025192743 / 30085553152,
            0,
            51252292925 / 65400821598,
            -2691868925 / 45128329728,
            187940372067 / 1594534317056,
            -1776094331 / 19743644256,
            11237099 / 235043384,
        ]
    ) / 2
    # Correctly rounded sums (math.fsum), not a BLAS dot product whose rounding varies by CPU:
    # at 1e-15 only the coefficients' own rounding (1.7e-16 here) may be left.
    at_half = [math.fsum(c * 0.5**k for k, c in enumerate(row, start=1)) for row in d.tolist()]
    np.testing.assert_allclose(at_half, mid, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Observed order on a nonlinear problem with known solution
# --------------------------------------------------------------------------------------------
# y' = u'(t) + N(y) - N(u(t)) has the solution y = u for y(0) = u(0), and its Jacobian
# N'(y) is genuinely nonlinear, so all elementary differentials are exercised.


def exact(t: float) -> np.ndarray:
    return np.array([np.exp(np.sin(2 * t)), np.cos(t + t * t)])


def exact_derivative(t: float) -> np.ndarray:
    return np.array([2 * np.cos(2 * t) * np.exp(np.sin(2 * t)), -(1 + 2 * t) * np.sin(t + t * t)])


def nonlinearity(y: np.ndarray) -> np.ndarray:
    return np.array([np.sin(y[1]) * y[0], 0.3 * y[1] - y[0] ** 2])


def rhs(t: float, y: np.ndarray) -> np.ndarray:
    return exact_derivative(t) + nonlinearity(y) - nonlinearity(exact(t))


def rk_step(tab: ButcherTableau, t: float, y: np.ndarray, h: float):
    k: list[np.ndarray] = []
    for ci, row in zip(tab.c, tab.a, strict=True):
        yi = y + h * sum((aij * kj for aij, kj in zip(row, k, strict=True)), np.zeros_like(y))
        k.append(rhs(t + ci * h, yi))
    return y + h * sum(bi * ki for bi, ki in zip(tab.b, k, strict=True)), k


def global_error(tab: ButcherTableau, steps: int, t_end: float = 2.0) -> float:
    """Largest error over the grid of a fixed-step integration of [0, t_end]."""
    h, y, worst = t_end / steps, exact(0.0), 0.0
    for j in range(steps):
        y, _ = rk_step(tab, j * h, y, h)
        worst = max(worst, float(np.abs(y - exact((j + 1) * h)).max()))
    return worst


def dense_error(tab: ButcherTableau, h: float, t0: float = 0.7) -> float:
    """Largest error of the continuous extension inside one step started on the exact solution."""
    y0 = exact(t0)
    _, k = rk_step(tab, t0, y0, h)
    worst = 0.0
    for theta in (0.25, 0.5, 0.75):
        w = [sum(p * theta ** (q + 1) for q, p in enumerate(row)) for row in tab.dense]
        y = y0 + h * sum(wi * ki for wi, ki in zip(w, k, strict=True))
        worst = max(worst, float(np.abs(y - exact(t0 + theta * h)).max()))
    return worst


# Step counts on [0, 2] chosen in the asymptotic range and well above rounding error.
CONVERGENCE_STEPS = {
    "euler": 128,
    "midpoint": 128,
    "heun2": 128,
    "heun3": 128,
    "rk4": 64,
    "adaptive_heun": 128,
    "fehlberg2": 128,
    "bosh3": 128,
    "dopri5": 128,
    "tsit5": 64,
    "dopri8": 16,
}


@pytest.mark.parametrize("name", BUILTIN)
def test_observed_order(name):
    tab = get_tableau(name)
    n = CONVERGENCE_STEPS[name]
    coarse, fine = global_error(tab, n), global_error(tab, 2 * n)
    assert fine > 1e-13  # not yet at rounding level
    observed = np.log2(coarse / fine)
    assert abs(observed - tab.order) < 0.3, f"observed order {observed:.2f}"


# Step sizes for the dense-output check, again asymptotic and above rounding error.
DENSE_STEPS = {"dopri5": 0.0125, "tsit5": 0.0125, "dopri8": 0.05}


@pytest.mark.parametrize("name", sorted(DENSE_ORDER))
def test_observed_dense_order(name):
    tab = get_tableau(name)
    h = DENSE_STEPS[name]
    coarse, fine = dense_error(tab, h), dense_error(tab, h / 2)
    assert fine > 1e-14
    observed = np.log2(coarse / fine) - 1  # local error is O(h^(p+1))
    assert abs(observed - DENSE_ORDER[name]) < 0.3, f"observed dense order {observed:.2f}"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _heun(**overrides):
    kwargs = dict(
        name="bad",
        order=2,
        c=(0, 1, 1),
        a=((), (1,), (0.5, 0.5)),
        b=(0.5, 0.5, 0),
        b_error=(-0.5, 0.5, 0),
        dense=((1, -0.5), (0, 0.5), (0, 0)),
    )
    kwargs.update(overrides)
    return ButcherTableau(**kwargs)


def test_valid_reference_tableau():
    tab = _heun()
    assert tab.fsal and tab.adaptive and tab.evaluations_per_step == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"a": ((), (1,), (0.5,))}, "row 2"),
        ({"a": ((0.0,), (1,), (0.5, 0.5))}, "row 0"),
        ({"a": ((), (1,))}, "rows"),
        ({"b": (0.5, 0.6, 0)}, "sum to 1"),
        ({"b": (0.5, 0.5), "b_error": None, "dense": None}, "entries"),
        ({"b_error": (-0.5, 0.4, 0)}, "b_error"),
        ({"dense": ((1, -0.5), (0, 0.4), (0, 0))}, "theta=1"),
        ({"dense": ((1, -0.5), (0, 0.5))}, "dense"),
        ({"c": (0.1, 1, 1)}, "c[0]"),
        ({"c": (0, 0.9, 1)}, "row sum"),
        ({"order": 0}, "order"),
    ],
)
def test_invalid_tableaus_raise(overrides, message):
    with pytest.raises(ValueError, match="invalid Butcher tableau") as info:
        _heun(**overrides)
    assert message in str(info.value)


def test_wrong_length_b_with_dense_is_reported():
    with pytest.raises(ValueError, match="invalid Butcher tableau"):
        _heun(b=(0.5, 0.5))


def test_reuse_last_stage_needs_a_last_stage_at_the_end_time():
    with pytest.raises(ValueError, match="reuse_last_stage"):
        ButcherTableau(name="bad", order=2, c=(0, 0.5), a=((), (0.5,)), b=(0, 1),
                       b_error=(-1, 1), reuse_last_stage=True)
