"""Alexander's two-stage SDIRK method: order 2, stiffly accurate, L-stable.

    gamma = 1 - 1/sqrt(2)
    k0 = f(t0 + gamma h, y0 + h gamma k0)
    k1 = f(t0 + h,       y0 + h ((1 - gamma) k0 + gamma k1))
    y1 = y0 + h ((1 - gamma) k0 + gamma k1)

Order 2 with ``b`` equal to the last row of ``a`` (stiff accuracy) leaves
``gamma^2 - 2 gamma + 1/2 = 0``, i.e. ``gamma = 1 -+ 1/sqrt(2)``; the smaller root keeps the
node ``c_0`` inside the step, as torchdiffeq's ``sdirk2`` (gamma = (2 - sqrt 2) / 2). The
stability function ``R(z) = (1 + (1 - 2 gamma) z) / (1 - gamma z)^2`` is A-stable with
``R(-inf) = 0``. Both stages share ``gamma``: one factorisation of ``I - h gamma J`` serves
the step. R. Alexander, Diagonally implicit Runge-Kutta methods for stiff O.D.E.'s, SIAM J.
Numer. Anal. 14 (1977) 1006-1021; Hairer and Wanner, *Solving Ordinary Differential
Equations II*, 2nd ed., Springer 1996, sec. IV.6.
"""

import math

from node.implicit_tableau import ImplicitTableau

_GAMMA = 1.0 - math.sqrt(2.0) / 2.0  # = 1 - 1/sqrt(2); halving sqrt(2) is exact

TABLEAU = ImplicitTableau(
    name="sdirk2",
    order=2,
    c=(_GAMMA, 1),
    a=(
        (_GAMMA, 0),
        (1 - _GAMMA, _GAMMA),
    ),
    b=(1 - _GAMMA, _GAMMA),
    source=(
        "R. Alexander, Diagonally implicit Runge-Kutta methods for stiff O.D.E.'s, SIAM J. "
        "Numer. Anal. 14 (1977) 1006-1021 (two stages, gamma = 1 - 1/sqrt(2))."
    ),
)
