"""Kvaerno's ESDIRK 3(2) pair: 4 stages, explicit first stage, stiffly accurate (FSAL), L-stable.

A. Kvaerno, "Singly diagonally implicit Runge-Kutta methods with an explicit first stage",
BIT Numerical Mathematics 44 (2004) 489-502: the method of order 3 with an embedded method of
order 2 (its third row, also stiffly accurate). All coefficients are functions of the diagonal
entry ``gamma`` (the root of ``6 g^3 - 18 g^2 + 9 g - 1`` near 0.4359), given to 11 digits as in
the paper; the numbers agree with diffrax's ``Kvaerno3`` tableau. The embedded error weights
are ``b - b_hat`` with ``b_hat`` the third row.
"""

from node.implicit_tableau import ImplicitTableau

_G = 0.43586652150
_A31 = (-4 * _G**2 + 6 * _G - 1) / (4 * _G)
_A32 = (-2 * _G + 1) / (4 * _G)
_A41 = (6 * _G - 1) / (12 * _G)
_A42 = -1 / ((24 * _G - 12) * _G)
_A43 = (-6 * _G**2 + 6 * _G - 1) / (6 * _G - 3)

TABLEAU = ImplicitTableau(
    name="kvaerno3",
    order=3,
    c=(0.0, 2 * _G, 1.0, 1.0),  # rows 3 and 4 sum to 1 (to 7e-16 with the 11-digit gamma)
    a=(
        (0.0, 0.0, 0.0, 0.0),
        (_G, _G, 0.0, 0.0),
        (_A31, _A32, _G, 0.0),
        (_A41, _A42, _A43, _G),
    ),
    b=(_A41, _A42, _A43, _G),
    b_error=(_A41 - _A31, _A42 - _A32, _A43 - _G, _G),
    source=(
        "A. Kvaerno, Singly diagonally implicit Runge-Kutta methods with an explicit first "
        "stage, BIT 44 (2004) 489-502 (the 3(2) pair); numbers as in diffrax's Kvaerno3."
    ),
)
