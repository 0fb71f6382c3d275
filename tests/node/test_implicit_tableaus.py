"""Checks of the implicit Runge-Kutta tableaus, independent of any stage solver.

* every ``ImplicitTableau`` in ``node/methods`` is listed here (a new one must bring its checks);
* structure: DIRK / ESDIRK / fully implicit, stiff accuracy, FSAL, the shared diagonal;
* algebraic order: the rooted-tree conditions ``b . Phi(t) = 1 / gamma(t)`` for all trees up
  to the stated order, and at least one violated one order higher (the order is exact);
* stage order: ``C(q): sum_j a_ij c_j^(k-1) = c_i^k / k`` for ``k <= q``, exact as well;
* linear stability of ``R(z) = 1 + z b^T (I - z A)^{-1} 1``: A-stability (``|R(iy)| <= 1``
  and no pole in the left half-plane), ``R(-inf) = 0`` for L-stable methods, ``|R(-inf)| = 1``
  and ``|R(iy)| = 1`` for the symmetric ones (Gauss, trapezoid);
* validation: malformed tableaus raise ``ValueError``.
"""

from __future__ import annotations

import math
import pkgutil
from importlib import import_module

import numpy as np
import pytest

import node.methods
from node.implicit_tableau import ImplicitTableau
from tests.node.test_tableaus import BROKEN, TOL, max_residual

# name: (order, stages, structure, stiffly accurate, stage order, stability at -inf)
#   structure: "DIRK" (a_ij = 0 for j > i, every stage implicit), "ESDIRK" (DIRK with an
#   explicit first stage and a common diagonal), "FIRK" (fully implicit);
#   stability at -inf: "L" (R -> 0) or "A" (|R| -> 1; A-stable, not L-stable).
IMPLICIT = {
    "implicit_euler": (1, 1, "DIRK", True, 1, "L"),
    "implicit_midpoint": (2, 1, "DIRK", False, 1, "A"),
    "trapezoid": (2, 2, "ESDIRK", True, 2, "A"),
    "sdirk2": (2, 2, "DIRK", True, 1, "L"),
    "trbdf2": (2, 3, "ESDIRK", True, 2, "L"),
    "radauIIA3": (3, 2, "FIRK", True, 2, "L"),
    "radauIIA5": (5, 3, "FIRK", True, 3, "L"),
    "gl4": (4, 2, "FIRK", False, 2, "A"),
    "gl6": (6, 3, "FIRK", False, 3, "A"),
    "kvaerno3": (3, 4, "ESDIRK", True, 2, "L"),
    "kvaerno5": (5, 7, "ESDIRK", True, 2, "L"),
}
NAMES = list(IMPLICIT)
# the adaptive pairs: order of the embedded solution b_hat = b - b_error
EMBEDDED = {"kvaerno3": 2, "kvaerno5": 4}
SDIRK_GAMMA = 1 - math.sqrt(2) / 2  # sdirk2 and trbdf2 (Alexander; Bank et al.)


def tableau(name: str) -> ImplicitTableau:
    # Read from the module, not the registry: the implicit methods are registered only once
    # the stage solver that runs them exists.
    return import_module(f"node.methods.{name}").TABLEAU


def coupling(tab: ImplicitTableau) -> np.ndarray:
    return np.array(tab.a, dtype=float)


def stability(tab: ImplicitTableau, z: complex) -> complex:
    """R(z) = 1 + z b^T (I - z A)^{-1} 1: one step of y' = lambda y with h lambda = z."""
    s = tab.stages
    stage = np.linalg.solve(np.eye(s) - z * coupling(tab), np.ones(s, dtype=complex))
    return 1 + z * complex(np.dot(tab.b, stage))


def stage_order_residual(tab: ImplicitTableau, k: int) -> float:
    """Largest residual of C(k)'s new condition: sum_j a_ij c_j^(k-1) = c_i^k / k."""
    c = np.array(tab.c)
    return float(np.abs(coupling(tab) @ c ** (k - 1) - c**k / k).max())


# --------------------------------------------------------------------------------------------
# Inventory and structure
# --------------------------------------------------------------------------------------------


def test_every_implicit_tableau_is_checked():
    found = set()
    for info in pkgutil.iter_modules(node.methods.__path__):
        tab = getattr(import_module(f"node.methods.{info.name}"), "TABLEAU", None)
        if isinstance(tab, ImplicitTableau):
            assert tab.name == info.name
            found.add(info.name)
    assert found == set(IMPLICIT)


@pytest.mark.parametrize("name", NAMES)
def test_structure(name):
    order, stages, kind, stiffly_accurate, _, _ = IMPLICIT[name]
    tab = tableau(name)
    assert (tab.name, tab.order, tab.stages) == (name, order, stages)
    assert tab.source
    assert tab.dense is None  # cubic Hermite (FSAL) or the fixed grid's interpolation
    assert tab.adaptive == (name in EMBEDDED)
    assert tab.diagonally_implicit == (kind != "FIRK")
    assert tab.explicit_first_stage == (kind == "ESDIRK")
    assert tab.stiffly_accurate == stiffly_accurate
    # FSAL: the last stage is f(t1, y1) and the first is f(t0, y0), so one is reused.
    assert tab.fsal == (kind == "ESDIRK")
    assert tab.implicit_stages == tuple(range(kind == "ESDIRK", stages))
    if kind == "FIRK":
        assert tab.singly_diagonal is None
    else:
        assert tab.singly_diagonal == pytest.approx(tab.a[-1][-1], abs=0)
    # Kvaerno's 5(4) pair places its third stage past the step's end (c_2 = 1.2303...)
    outside = {"kvaerno5": (2,)}.get(name, ())
    assert all(0.0 <= ci <= 1.0 for i, ci in enumerate(tab.c) if i not in outside)
    assert all(ci > 1.0 for i, ci in enumerate(tab.c) if i in outside)


@pytest.mark.parametrize("name", ["sdirk2", "trbdf2"])
def test_sdirk_gamma(name):
    """Both share gamma = 1 - 1/sqrt(2), the L-stable root inside the step (as torchdiffeq)."""
    assert tableau(name).singly_diagonal == pytest.approx(SDIRK_GAMMA, rel=1e-15)


def test_trbdf2_is_a_trapezoidal_step_then_bdf2():
    """The second stage is the trapezoidal rule from t0 to t0 + 2 gamma h."""
    tab = tableau("trbdf2")
    assert tab.c[1] == pytest.approx(2 * SDIRK_GAMMA, rel=1e-15)
    assert tab.a[1][0] == tab.a[1][1]


# --------------------------------------------------------------------------------------------
# Order conditions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_order_conditions(name):
    tab = tableau(name)
    for n in range(1, tab.order + 1):
        assert max_residual(tab, tab.b, n) < TOL, f"order-{n} condition violated"
    assert max_residual(tab, tab.b, tab.order + 1) > BROKEN, "order is higher than stated"


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_solution_has_its_order(name):
    tab = tableau(name)
    b_hat = np.array(tab.b) - np.array(tab.b_error)
    for n in range(1, EMBEDDED[name] + 1):
        assert max_residual(tab, b_hat, n) < TOL, f"embedded order-{n} condition violated"
    assert max_residual(tab, b_hat, EMBEDDED[name] + 1) > BROKEN


@pytest.mark.parametrize("name", NAMES)
def test_stage_order(name):
    tab = tableau(name)
    q = IMPLICIT[name][4]
    for k in range(1, q + 1):
        assert stage_order_residual(tab, k) < TOL, f"C({k}) violated"
    assert stage_order_residual(tab, q + 1) > BROKEN, "stage order is higher than stated"


# --------------------------------------------------------------------------------------------
# Linear stability
# --------------------------------------------------------------------------------------------

IMAGINARY_AXIS = np.concatenate([-np.logspace(-3, 6, 200), np.logspace(-3, 6, 200)])


@pytest.mark.parametrize("name", NAMES)
def test_a_stable(name):
    """|R(iy)| <= 1 on the imaginary axis and R analytic in the left half-plane (its poles,
    the reciprocals of the eigenvalues of A, lie in the right half-plane): by the maximum
    principle |R(z)| <= 1 for all Re z <= 0."""
    tab = tableau(name)
    worst = max(abs(stability(tab, 1j * y)) for y in IMAGINARY_AXIS)
    assert worst <= 1 + 1e-12, f"|R(iy)| = {worst}"
    eigenvalues = np.linalg.eigvals(coupling(tab))
    nonzero = eigenvalues[np.abs(eigenvalues) > 1e-12]  # a zero one: a pole at infinity
    assert np.all(nonzero.real > 0), f"eigenvalues of A: {eigenvalues}"
    # ... and inside: a few points of the left half-plane.
    for z in (-0.5, -3 + 4j, -100 - 7j, -1e4 + 1e4j):
        assert abs(stability(tab, z)) <= 1 + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_stiff_limit(name):
    """L-stable methods damp infinitely stiff modes, R(-inf) = 0; the symmetric ones keep
    |R(-inf)| = 1 and |R(iy)| = 1 (no damping, no growth, along the imaginary axis)."""
    tab = tableau(name)
    at_infinity = abs(stability(tab, -1e8))
    if IMPLICIT[name][5] == "L":
        assert at_infinity < 1e-6
    else:
        assert abs(at_infinity - 1) < 1e-6
        for y in (0.1, 1.0, 10.0, 1e3):
            assert abs(abs(stability(tab, 1j * y)) - 1) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_stability_function_matches_exp_to_order(name):
    """R(z) - exp(z) = O(z^(p+1)): the linear part of the order conditions, seen through R."""
    tab = tableau(name)
    p = tab.order
    z = 0.1 if p >= 5 else 0.02  # small enough to be asymptotic, large enough above rounding
    e1, e2 = (abs(stability(tab, x) - math.exp(x)) for x in (z, z / 2))
    assert math.log2(e1 / e2) == pytest.approx(p + 1, abs=0.15)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _radau3(**overrides) -> ImplicitTableau:
    kwargs = dict(
        name="bad",
        order=3,
        c=(1 / 3, 1),
        a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)),
        b=(3 / 4, 1 / 4),
        b_error=(0.5, -0.5),
        dense=((1.5, -0.75), (-0.5, 0.75)),
    )
    kwargs.update(overrides)
    return ImplicitTableau(**kwargs)


def test_valid_reference_tableau():
    tab = _radau3()
    assert tab.adaptive and tab.stiffly_accurate and not tab.diagonally_implicit


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"c": (), "a": (), "b": (), "b_error": None, "dense": None}, "at least one stage"),
        ({"a": ((5 / 12, -1 / 12),)}, "a must have 2 rows"),
        ({"a": ((1 / 3,), (3 / 4, 1 / 4))}, "a row 0 must have 2 entries"),
        ({"a": ((5 / 12, -1 / 12), (3 / 4, 1 / 4, 0))}, "a row 1 must have 2 entries"),
        ({"c": (0.3, 1)}, "row sum of a row 0"),
        ({"b": (3 / 4, 1 / 4, 0)}, "b must have 2 entries"),
        ({"b": (0.7, 0.2)}, "b must sum to 1"),
        ({"b_error": (1.0,)}, "b_error must have 2 entries"),
        ({"b_error": (0.5, -0.4)}, "b_error must sum to 0"),
        ({"dense": ((0.75,),)}, "dense must have 2 rows"),
        ({"dense": ((1.5, -0.7), (-0.5, 0.75))}, "theta=1"),
        ({"order": 0}, "order must be >= 1"),
        ({"c": (0, 1), "a": ((0, 0), (1, 0)), "b": (0.5, 0.5), "dense": None}, "explicit"),
    ],
)
def test_invalid_tableaus_raise(overrides, message):
    with pytest.raises(ValueError, match="invalid implicit tableau 'bad'") as info:
        _radau3(**overrides)
    assert message in str(info.value)
