"""Heun's second-order method (explicit trapezoidal rule): two stages, order 2.

K. Heun, "Neue Methode zur approximativen Integration der Differentialgleichungen einer
unabhaengigen Veraenderlichen", Z. Math. Phys. 45 (1900), 23-38. Coefficients as in torchdiffeq's
``heun2`` (torchdiffeq/_impl/fixed_grid.py, class ``Heun2``).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/fixed_grid.py, Heun2.
TABLEAU = ButcherTableau(
    name="heun2",
    order=2,
    c=(0, 1),
    a=(
        (),
        (1,),
    ),
    b=(F(1, 2), F(1, 2)),
    b_error=None,
    dense=None,
    source=(
        "K. Heun, Neue Methode zur approximativen Integration der Differentialgleichungen einer "
        "unabhaengigen Veraenderlichen, Z. Math. Phys. 45 (1900) 23-38."
    ),
)
