"""Kutta's 3/8-rule: four stages, order 4.

W. Kutta, "Beitrag zur naeherungsweisen Integration totaler Differentialgleichungen",
Z. Math. Phys. 46 (1901), 435-453. torchdiffeq's ``rk4`` method steps with this rule
(torchdiffeq/_impl/rk_common.py, ``rk4_alt_step_func``), not with the "classical" RK4.
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/rk_common.py, rk4_alt_step_func.
TABLEAU = ButcherTableau(
    name="rk4",
    order=4,
    c=(0, F(1, 3), F(2, 3), 1),
    a=(
        (),
        (F(1, 3),),
        (F(-1, 3), 1),
        (1, -1, 1),
    ),
    b=(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
    b_error=None,
    dense=None,
    source=(
        "W. Kutta, Beitrag zur naeherungsweisen Integration totaler Differentialgleichungen, "
        "Z. Math. Phys. 46 (1901) 435-453 (the 3/8-rule)."
    ),
)
