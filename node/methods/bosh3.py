"""Bogacki-Shampine 3(2) pair: four stages (FSAL by construction), order 3.

P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett. 2(4)
(1989), 321-325. Same coefficients as torchdiffeq's ``bosh3`` (torchdiffeq/_impl/bosh3.py).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/bosh3.py.
TABLEAU = ButcherTableau(
    name="bosh3",
    order=3,
    c=(0, F(1, 2), F(3, 4), 1),
    a=(
        (),
        (F(1, 2),),
        (0, F(3, 4)),
        (F(2, 9), F(1, 3), F(4, 9)),
    ),
    b=(F(2, 9), F(1, 3), F(4, 9), 0),
    # b - b_hat with the second-order b_hat = (7/24, 1/4, 1/3, 1/8).
    b_error=(
        F(2, 9) - F(7, 24),
        F(1, 3) - F(1, 4),
        F(4, 9) - F(1, 3),
        -F(1, 8),
    ),
    dense=None,
    source=(
        "P. Bogacki and L. F. Shampine, A 3(2) pair of Runge-Kutta formulas, "
        "Appl. Math. Lett. 2(4) (1989) 321-325."
    ),
)
