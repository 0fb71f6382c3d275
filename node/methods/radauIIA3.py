"""Radau IIA method with two stages: order 3, stage order 2, stiffly accurate, L-stable.

    1/3 | 5/12  -1/12
    1   | 3/4    1/4
    ----+------------
        | 3/4    1/4

Nodes are the zeros of ``d/dx [x (x - 1)^2]`` (right Radau points, ``c_1 = 1``); order
``2s - 1 = 3``. Its stability function is the (1, 2) Pade approximation of
``exp(z)``, ``R(z) = (1 + z/3) / (1 - 2z/3 + z^2/6)``. B. L. Ehle, On Pade approximations to
the exponential function and A-stable methods for the numerical solution of initial value
problems, Research Report CSRR 2010, University of Waterloo, 1969; Hairer and Wanner,
*Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996, sec. IV.5.
torchdiffeq's ``radauIIA3`` is the same tableau.
"""

from fractions import Fraction as F

from node.implicit_tableau import ImplicitTableau

TABLEAU = ImplicitTableau(
    name="radauIIA3",
    order=3,
    c=(F(1, 3), 1),
    a=(
        (F(5, 12), F(-1, 12)),
        (F(3, 4), F(1, 4)),
    ),
    b=(F(3, 4), F(1, 4)),
    source=(
        "B. L. Ehle, Research Report CSRR 2010, Univ. of Waterloo 1969; E. Hairer, G. Wanner, "
        "Solving Ordinary Differential Equations II, 2nd ed., Springer 1996, sec. IV.5 "
        "(Radau IIA, s = 2)."
    ),
)
