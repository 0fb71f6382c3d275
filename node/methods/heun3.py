"""Heun's third-order method: three stages (c = 0, 1/3, 2/3), order 3.

K. Heun, "Neue Methode zur approximativen Integration der Differentialgleichungen einer
unabhaengigen Veraenderlichen", Z. Math. Phys. 45 (1900), 23-38. Coefficients as in torchdiffeq's
``heun3`` (torchdiffeq/_impl/fixed_grid.py, class ``Heun3``).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/fixed_grid.py, Heun3.
TABLEAU = ButcherTableau(
    name="heun3",
    order=3,
    c=(0, F(1, 3), F(2, 3)),
    a=(
        (),
        (F(1, 3),),
        (0, F(2, 3)),
    ),
    b=(F(1, 4), 0, F(3, 4)),
    b_error=None,
    dense=None,
    source=(
        "K. Heun, Neue Methode zur approximativen Integration der Differentialgleichungen einer "
        "unabhaengigen Veraenderlichen, Z. Math. Phys. 45 (1900) 23-38."
    ),
)
