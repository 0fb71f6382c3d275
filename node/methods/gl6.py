"""Gauss-Legendre method with three stages: order 6, stage order 3, A-stable (not L-stable).

With ``s15 = sqrt(15)``::

    1/2 - s15/10 | 5/36           2/9 - s15/15   5/36 - s15/30
    1/2          | 5/36 + s15/24  2/9            5/36 - s15/24
    1/2 + s15/10 | 5/36 + s15/30  2/9 + s15/15   5/36
    -------------+--------------------------------------------
                 | 5/18           4/9            5/18

Nodes are the Gauss-Legendre points on [0, 1]; order ``2s = 6``. Symmetric and symplectic;
the stability function is the (3, 3) Pade approximation of ``exp(z)``, with ``|R(iy)| = 1``
and ``R(-inf) = -1``. J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964)
50-64; Hairer and Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer
1996, sec. IV.5. torchdiffeq's ``gl6`` is the same tableau.
"""

import math
from fractions import Fraction as F

from node.implicit_tableau import ImplicitTableau

_S15 = math.sqrt(15.0)

TABLEAU = ImplicitTableau(
    name="gl6",
    order=6,
    c=(0.5 - _S15 / 10, F(1, 2), 0.5 + _S15 / 10),
    a=(
        (5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
        (5 / 36 + _S15 / 24, F(2, 9), 5 / 36 - _S15 / 24),
        (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, F(5, 36)),
    ),
    b=(F(5, 18), F(4, 9), F(5, 18)),
    source=(
        "J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964) 50-64; "
        "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer "
        "1996, sec. IV.5 (Gauss, s = 3)."
    ),
)
