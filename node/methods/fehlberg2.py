"""Fehlberg's RKF1(2) pair, propagating the second-order solution.

E. Fehlberg, "Low-order classical Runge-Kutta formulas with stepsize control and their
application to some heat transfer problems", NASA Technical Report R-315, 1969. As in torchdiffeq's
``fehlberg2`` (torchdiffeq/_impl/fehlberg2.py, ``_FEHLBERG2_TABLEAU``) the second-order formula
``(1/512, 255/256, 1/512)`` is propagated and the first-order formula ``(1/256, 255/256)`` is the
embedded one. Fehlberg's third stage is evaluated at the *first-order* end point; like torchdiffeq
it is reused as the next step's first derivative (``reuse_last_stage``), which is within
``O(h^2)`` of the derivative at the propagated end point and keeps the method second order at two
evaluations per step.
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/fehlberg2.py.
TABLEAU = ButcherTableau(
    name="fehlberg2",
    order=2,
    c=(0, F(1, 2), 1),
    a=(
        (),
        (F(1, 2),),
        (F(1, 256), F(255, 256)),
    ),
    b=(F(1, 512), F(255, 256), F(1, 512)),
    # b - b_hat with b_hat = (1/256, 255/256, 0), the first-order formula.
    b_error=(F(-1, 512), 0, F(1, 512)),
    reuse_last_stage=True,
    dense=None,
    source=(
        "E. Fehlberg, Low-order classical Runge-Kutta formulas with stepsize control and their "
        "application to some heat transfer problems, NASA TR R-315, 1969 (RKF1(2)); the last "
        "stage is reused as in torchdiffeq."
    ),
)
