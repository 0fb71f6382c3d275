"""Adams multistep methods: their coefficients and the descriptor the method registry holds.

An Adams method integrates a polynomial through past derivatives ``f_j = f(t_j, y_j)``:

    y_{n+1} = y_n + h * sum_j w_j f_j,        w_j = (1/h) * integral over [t_n, t_{n+1}] of L_j,

with ``L_j`` the Lagrange basis polynomial of node ``t_j``. *Adams-Bashforth* of order ``k``
(explicit) uses the ``k`` nodes ``t_n, t_{n-1}, ..., t_{n-k+1}``; *Adams-Moulton* of order ``k``
(implicit) uses ``t_{n+1}, t_n, ..., t_{n-k+2}``, so ``y_{n+1}`` appears on both sides. In the
scaled time ``s = (t - t_n) / h`` the nodes are ``s_j`` and the weights are

    w_j = integral from 0 to 1 of prod_{m != j} (s - s_m) / (s_j - s_m) ds,

i.e. the unique weights that integrate every polynomial of degree ``< k`` exactly. On a uniform
grid (``s_j = -j``, plus ``s = 1`` for Moulton) they are the classical coefficients, generated here
exactly in rational arithmetic (:func:`bashforth`, :func:`moulton`; e.g. order 4:
``(55, -59, 37, -9) / 24`` and ``(9, 19, -5, 1) / 24``). On a non-uniform grid (an irregular
``t`` with ``step_size=None``, a ``grid_constructor``, or the shorter last step of a
``step_size`` grid) the same formula is evaluated in floating point for the actual nodes
(:func:`weights`), so the method keeps its order where constant coefficients would drop to
order 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

MAX_ORDER = 12  # as torchdiffeq; orders beyond ~8 are of little use on a fixed grid
# Nodes within this distance (in steps) of the uniform grid's use the exact coefficients: a
# step_size grid's points carry rounding errors of ~1e-16 * |t| / h, and the difference between
# the two sets of weights is then below the rounding error of the step itself.
_UNIFORM_SLACK = 1e-12


def _integrated_basis(nodes: Sequence) -> tuple:
    """``w_j = int_0^1 L_j(s) ds`` for the given (distinct) nodes; exact for Fraction nodes."""
    out = []
    for j, sj in enumerate(nodes):
        # prod_{m != j} (s - s_m), as coefficients of s^0, s^1, ... (built one factor at a time)
        poly = [sj**0]  # 1 of the nodes' type: Fraction nodes stay exact throughout
        denominator = sj**0
        for m, sm in enumerate(nodes):
            if m == j:
                continue
            poly = [-sm * poly[0]] + [poly[i - 1] - sm * poly[i] for i in range(1, len(poly))] \
                + [poly[-1]]
            denominator *= sj - sm
        out.append(sum(c / (i + 1) for i, c in enumerate(poly)) / denominator)
    return tuple(out)


@cache
def bashforth(order: int) -> tuple[Fraction, ...]:
    """Adams-Bashforth weights of ``order`` for ``f_n, f_{n-1}, ...`` on a uniform grid."""
    return _integrated_basis([Fraction(-j) for j in range(order)])


@cache
def moulton(order: int) -> tuple[Fraction, ...]:
    """Adams-Moulton weights of ``order`` for ``f_{n+1}, f_n, f_{n-1}, ...`` on a uniform grid."""
    return _integrated_basis([Fraction(1)] + [Fraction(-j) for j in range(order - 1)])


@cache
def _uniform_floats(order: int, implicit: bool) -> tuple[float, ...]:
    return tuple(float(w) for w in (moulton(order) if implicit else bashforth(order)))


@lru_cache(maxsize=256)
def _float_weights(nodes: tuple[float, ...]) -> tuple[float, ...]:
    return _integrated_basis(nodes)


def weights(nodes: Sequence[float], implicit: bool) -> tuple[float, ...]:
    """Adams weights for scaled nodes ``s_j = (t_j - t_n) / (t_{n+1} - t_n)``, most recent
    first (with ``s = 1`` first for Moulton, ``implicit=True``): the exact classical ones when
    the nodes are those of a uniform grid, else computed for these nodes."""
    k = len(nodes)
    uniform = ([1.0] if implicit else []) + [-float(j) for j in range(k - int(implicit))]
    if all(abs(s - u) <= _UNIFORM_SLACK for s, u in zip(nodes, uniform, strict=True)):
        return _uniform_floats(k, implicit)
    return _float_weights(tuple(nodes))


@dataclass(frozen=True)
class AdamsMethod:
    """An Adams method as the registry holds it (it has no Butcher tableau: it is run by the
    multistep loop, :func:`node.adams.integrate_adams`, on a fixed grid).

    Args:
        name: the method's name as passed to ``odeint(method=...)``.
        implicit: Adams-Bashforth-Moulton predictor-corrector (``True``) or Adams-Bashforth alone.
        source: citation for the method.
    """

    name: str
    implicit: bool
    source: str
    adaptive: bool = False  # no error estimate: always a fixed grid
    order: int = 4  # with the default options['max_order']

    def history(self, order: int) -> int:
        """How many past derivatives ``f_n, f_{n-1}, ...`` a step of ``order`` uses."""
        return max(order - 1, 1) if self.implicit else order


_SOURCE = (
    "F. Bashforth and J. C. Adams, An Attempt to Test the Theories of Capillary Action, "
    "Cambridge University Press (1883); F. R. Moulton, New Methods in Exterior Ballistics, "
    "University of Chicago Press (1926); E. Hairer, S. P. Norsett and G. Wanner, Solving "
    "Ordinary Differential Equations I, 2nd ed., Springer (1993), sec. III.1."
)
EXPLICIT_ADAMS = AdamsMethod("explicit_adams", implicit=False, source=_SOURCE)
IMPLICIT_ADAMS = AdamsMethod("implicit_adams", implicit=True, source=_SOURCE)
# Registry names: torchdiffeq's, with its alias fixed_adams for implicit_adams.
ADAMS_METHODS = {
    "explicit_adams": EXPLICIT_ADAMS,
    "implicit_adams": IMPLICIT_ADAMS,
    "fixed_adams": IMPLICIT_ADAMS,
}
