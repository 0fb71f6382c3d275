"""Kvaerno's ESDIRK 5(4) pair: 7 stages, explicit first stage, stiffly accurate (FSAL), L-stable.

A. Kvaerno, "Singly diagonally implicit Runge-Kutta methods with an explicit first stage",
BIT Numerical Mathematics 44 (2004) 489-502: the method of order 5 with an embedded method of
order 4 (its sixth row, also stiffly accurate), diagonal entry ``gamma = 0.26``. The
coefficients (17 digits) are those of the paper as tabulated in diffrax's ``Kvaerno5``; the
nodes are the row sums. The embedded error weights are ``b - b_hat`` with ``b_hat`` the sixth
row.

The third stage's node is ``c_2 = 1.2303`` (past the step's end). On an adaptive step landing on a
``jump_t`` time it is evaluated at the step's end, from before the discontinuity (see
``node.implicit_runge_kutta.stage_times``); with a fixed grid's ``perturb`` it stays at its node
and so evaluates ``func`` past the grid point (after a discontinuity there).
"""

from node.implicit_tableau import ImplicitTableau

_G = 0.26
_A = (
    (),
    (_G,),
    (0.13, 0.84033320996790809),
    (0.22371961478320505, 0.47675532319799699, -0.06470895363112615),
    (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998),
    (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
     0.61943039072480676),
    (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
     0.62993304899016403, 0.06962479448202728),
)
_ROWS = tuple(
    row + ((_G,) if i > 0 else (0.0,)) + (0.0,) * (6 - len(row)) for i, row in enumerate(_A)
)

TABLEAU = ImplicitTableau(
    name="kvaerno5",
    order=5,
    c=tuple(sum(row) for row in _ROWS),
    a=_ROWS,
    b=_ROWS[6],
    b_error=tuple(x - y for x, y in zip(_ROWS[6], _ROWS[5], strict=True)),
    source=(
        "A. Kvaerno, Singly diagonally implicit Runge-Kutta methods with an explicit first "
        "stage, BIT 44 (2004) 489-502 (the 5(4) pair); numbers as in diffrax's Kvaerno5."
    ),
)
