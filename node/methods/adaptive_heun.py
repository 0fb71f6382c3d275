"""Adaptive Heun: Heun's method (order 2) with explicit Euler (order 1) embedded.

Heun's method is from K. Heun, "Neue Methode zur approximativen Integration der
Differentialgleichungen einer unabhaengigen Veraenderlichen", Z. Math. Phys. 45 (1900), 23-38;
the Euler/Heun pair with step-size control follows torchdiffeq's ``adaptive_heun``
(torchdiffeq/_impl/adaptive_heun.py, ``_ADAPTIVE_HEUN_TABLEAU``). The pair is not FSAL: its second
stage sits at the Euler predictor ``y0 + h f0``, not at the Heun solution. Like torchdiffeq it is
reused as the next step's first derivative anyway (``reuse_last_stage``): the predictor is within
``O(h^2)`` of ``y1``, which keeps the method second order at one evaluation per step.

The error weights are ``b - b_euler``; torchdiffeq stores the negative of these (the sign does not
matter for the error norm).
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/adaptive_heun.py.
TABLEAU = ButcherTableau(
    name="adaptive_heun",
    order=2,
    c=(0, 1),
    a=(
        (),
        (1,),
    ),
    b=(F(1, 2), F(1, 2)),
    b_error=(F(-1, 2), F(1, 2)),
    reuse_last_stage=True,
    dense=None,
    source=(
        "K. Heun, Z. Math. Phys. 45 (1900) 23-38, with explicit Euler embedded "
        "(as torchdiffeq's adaptive_heun, reusing the last stage)."
    ),
)
