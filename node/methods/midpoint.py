"""Explicit midpoint method: two stages, order 2.

C. Runge, "Ueber die numerische Aufloesung von Differentialgleichungen", Math. Ann. 46 (1895),
167-178. Same method as torchdiffeq's ``midpoint`` (torchdiffeq/_impl/fixed_grid.py, class
``Midpoint``).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

TABLEAU = ButcherTableau(
    name="midpoint",
    order=2,
    c=(0, F(1, 2)),
    a=(
        (),
        (F(1, 2),),
    ),
    b=(0, 1),
    b_error=None,
    dense=None,
    source=(
        "C. Runge, Ueber die numerische Aufloesung von Differentialgleichungen, "
        "Math. Ann. 46 (1895) 167-178."
    ),
)
