"""Gauss-Legendre method with two stages: order 4, stage order 2, A-stable (not L-stable).

With ``s3 = sqrt(3)``::

    1/2 - s3/6 | 1/4          1/4 - s3/6
    1/2 + s3/6 | 1/4 + s3/6   1/4
    -----------+------------------------
               | 1/2          1/2

Nodes are the Gauss-Legendre points on [0, 1]; order ``2s = 4``, the highest for two stages.
Symmetric and symplectic; the stability function is the (2, 2) Pade approximation of
``exp(z)``: ``|R(iy)| = 1`` and ``R(-inf) = 1``, so very stiff components are not damped.
J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964) 50-64; Hairer and
Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996, sec. IV.5.
torchdiffeq's ``gl4`` is the same tableau.
"""

import math
from fractions import Fraction as F

from node.implicit_tableau import ImplicitTableau

_D = math.sqrt(3.0) / 6

TABLEAU = ImplicitTableau(
    name="gl4",
    order=4,
    c=(0.5 - _D, 0.5 + _D),
    a=(
        (F(1, 4), 0.25 - _D),
        (0.25 + _D, F(1, 4)),
    ),
    b=(F(1, 2), F(1, 2)),
    source=(
        "J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964) 50-64; "
        "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer "
        "1996, sec. IV.5 (Gauss, s = 2)."
    ),
)
