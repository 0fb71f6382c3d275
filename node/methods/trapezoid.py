"""Trapezoidal rule (Crank-Nicolson) as a two-stage ESDIRK: order 2, A-stable (not L-stable).

    k0 = f(t0, y0),   k1 = f(t0 + h, y0 + h/2 (k0 + k1)),   y1 = y0 + h/2 (k0 + k1).

The first stage is explicit and the last row of ``a`` equals ``b`` with ``c_1 = 1`` (stiffly
accurate), so ``k1 = f(t1, y1)`` is the next step's ``k0``: one implicit stage per step. This
is the two-stage Lobatto IIIA method. Stability function ``R(z) = (1 + z/2) / (1 - z/2)`` as
the implicit midpoint rule: ``|R(iy)| = 1``, ``R(-inf) = -1`` (stiff components are not
damped). J. Crank, P. Nicolson, A practical method for numerical evaluation of solutions of
partial differential equations of the heat-conduction type, Proc. Cambridge Philos. Soc. 43
(1947) 50-67; Hairer and Wanner, *Solving Ordinary Differential Equations II*, 2nd ed.,
Springer 1996, sec. IV.5 (Lobatto IIIA). torchdiffeq's ``trapezoid`` is the same tableau.
"""

from fractions import Fraction

from node.implicit_tableau import ImplicitTableau

_HALF = Fraction(1, 2)

TABLEAU = ImplicitTableau(
    name="trapezoid",
    order=2,
    c=(0, 1),
    a=(
        (0, 0),
        (_HALF, _HALF),
    ),
    b=(_HALF, _HALF),
    source=(
        "J. Crank, P. Nicolson, Proc. Cambridge Philos. Soc. 43 (1947) 50-67; E. Hairer, "
        "G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer 1996, "
        "sec. IV.5 (two-stage Lobatto IIIA)."
    ),
)
