"""Adaptive Heun: Heun's method (order 2) with explicit Euler (order 1) embedded, in FSAL form.

Heun's method is from K. Heun, "Neue Methode zur approximativen Integration der
Differentialgleichungen einer unabhaengigen Veraenderlichen", Z. Math. Phys. 45 (1900), 23-38;
the Euler/Heun pair with step-size control follows torchdiffeq's ``adaptive_heun``
(torchdiffeq/_impl/adaptive_heun.py, ``_ADAPTIVE_HEUN_TABLEAU``). The pair is not FSAL by
construction, so the derivative at the end point is appended as a third stage with weight 0.
torchdiffeq has no such stage and instead reuses ``f(t1, y0 + h f0)`` as the next step's first
derivative, so it spends one evaluation per step where this tableau spends two.

The error weights are ``b - b_euler``; torchdiffeq stores the negative of these (the sign does not
matter for the error norm).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/adaptive_heun.py (plus the FSAL stage).
TABLEAU = ButcherTableau(
    name="adaptive_heun",
    order=2,
    c=(0, 1, 1),
    a=(
        (),
        (1,),
        (F(1, 2), F(1, 2)),
    ),
    b=(F(1, 2), F(1, 2), 0),
    b_error=(F(-1, 2), F(1, 2), 0),
    dense=None,
    source=(
        "K. Heun, Z. Math. Phys. 45 (1900) 23-38, with explicit Euler embedded "
        "(as torchdiffeq's adaptive_heun); FSAL stage appended."
    ),
)
