"""TR-BDF2 as a three-stage ESDIRK: order 2, stiffly accurate, L-stable.

A trapezoidal step from ``t0`` to ``t0 + 2 gamma h``, then a BDF2 step from the values at
``t0`` and ``t0 + 2 gamma h`` to ``t0 + h``, written as one Runge-Kutta tableau
(``gamma = 1 - 1/sqrt(2)``, ``w = sqrt(2)/4``)::

    0          |  0      0      0
    2 gamma    |  gamma  gamma  0
    1          |  w      w      gamma
    -----------+---------------------
               |  w      w      gamma

The first stage is explicit and the last row equals ``b`` (``k2 = f(t1, y1)`` is the next
step's ``k0``); both implicit stages share ``gamma``, so one factorisation of
``I - h gamma J`` serves the step: the trapezoidal fraction ``2 gamma = 2 - sqrt(2)`` is the
one for which the two implicit stages' iteration matrices coincide. Stage order 2; the BDF2
stage gives ``R(-inf) = 0``. R. E. Bank, W. M. Coughran, W. Fichtner, E. H. Grosse, D. J. Rose,
R. K. Smith, Transient simulation of silicon devices and circuits, IEEE Trans. Computer-Aided
Design 4 (1985) 436-451; M. E. Hosea, L. F. Shampine, Analysis and implementation of TR-BDF2,
Appl. Numer. Math. 20 (1996) 21-37 (its Runge-Kutta form, with ``d = gamma``). torchdiffeq's
``trbdf2`` is the same tableau.
"""

import math

from node.implicit_tableau import ImplicitTableau

_GAMMA = 1.0 - math.sqrt(2.0) / 2.0
_W = math.sqrt(2.0) / 4.0

TABLEAU = ImplicitTableau(
    name="trbdf2",
    order=2,
    c=(0, 2 * _GAMMA, 1),
    a=(
        (0, 0, 0),
        (_GAMMA, _GAMMA, 0),
        (_W, _W, _GAMMA),
    ),
    b=(_W, _W, _GAMMA),
    source=(
        "R. E. Bank et al., IEEE Trans. Computer-Aided Design 4 (1985) 436-451; M. E. Hosea, "
        "L. F. Shampine, Analysis and implementation of TR-BDF2, Appl. Numer. Math. 20 (1996) "
        "21-37."
    ),
)
