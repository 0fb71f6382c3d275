"""Radau IIA method with three stages: order 5, stage order 3, stiffly accurate, L-stable.

The method of Hairer and Wanner's RADAU5 code (``s6 = sqrt(6)``)::

    (4 - s6)/10 | (88 - 7 s6)/360      (296 - 169 s6)/1800  (-2 + 3 s6)/225
    (4 + s6)/10 | (296 + 169 s6)/1800  (88 + 7 s6)/360      (-2 - 3 s6)/225
    1           | (16 - s6)/36         (16 + s6)/36         1/9
    ------------+-------------------------------------------------------------
                | (16 - s6)/36         (16 + s6)/36         1/9

Nodes are the zeros of ``d^2/dx^2 [x^2 (x - 1)^3]``; order ``2s - 1 = 5``; the stability
function is the (2, 3) Pade approximation of ``exp(z)``. B. L. Ehle, Research Report CSRR
2010, University of Waterloo, 1969; Hairer and Wanner, *Solving Ordinary Differential
Equations II*, 2nd ed., Springer 1996, sec. IV.5 and IV.8 (the RADAU5 implementation).
The irrational entries are evaluated in float64 at import. torchdiffeq's ``radauIIA5`` is the
same tableau.
"""

import math

from node.implicit_tableau import ImplicitTableau

_S6 = math.sqrt(6.0)
_B = ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9)

TABLEAU = ImplicitTableau(
    name="radauIIA5",
    order=5,
    c=((4 - _S6) / 10, (4 + _S6) / 10, 1),
    a=(
        ((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
        ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
        _B,
    ),
    b=_B,
    source=(
        "B. L. Ehle, Research Report CSRR 2010, Univ. of Waterloo 1969; E. Hairer, G. Wanner, "
        "Solving Ordinary Differential Equations II, 2nd ed., Springer 1996, sec. IV.5 "
        "(Radau IIA, s = 3)."
    ),
)
