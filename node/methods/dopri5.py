"""Dormand-Prince 5(4) pair with Shampine's error estimator and 4th-order dense output.

Propagated solution: J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta formulae",
J. Comput. Appl. Math. 6(1) (1980), 19-26 (seven stages, FSAL by construction).

Embedded solution: torchdiffeq's ``dopri5`` (torchdiffeq/_impl/dopri5.py,
``_DORMAND_PRINCE_SHAMPINE_TABLEAU``) does not use Dormand and Prince's fourth-order formula
``(5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40)`` but the alternative one
``(1951/21600, 0, 22642/50085, 451/720, -12231/42400, 649/6300, 1/60)`` of L. F. Shampine,
"Some practical Runge-Kutta formulas", Math. Comp. 46(173) (1986), 135-150. It is used here too,
so that step sizes and function-evaluation counts agree with torchdiffeq.

Dense output: the fourth-order continuous extension of Shampine (1986) as implemented in Hairer's
``DOPRI5`` (subroutine ``CONTD5``; E. Hairer, S. P. Norsett and G. Wanner, *Solving Ordinary
Differential Equations I*, 2nd ed., Springer 1993, Sec. II.6), expanded into polynomials in theta.
The numbers are those of scipy's ``RK45.P`` (scipy/integrate/_ivp/rk.py); expanding Hairer's form
with his coefficients d1, d3..d7 gives exactly the same rationals. At theta = 1/2 it equals
torchdiffeq's ``DPS_C_MID``, so it is the same quartic that torchdiffeq fits.
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: torchdiffeq 0.2.5, torchdiffeq/_impl/dopri5.py (c, a, b, b_error);
# scipy, scipy/integrate/_ivp/rk.py, RK45.P (dense).
TABLEAU = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        (),
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)),
    ),
    b=(F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0),
    # b - b_hat with Shampine's (1986) fourth-order b_hat.
    b_error=(
        F(35, 384) - F(1951, 21600),
        0,
        F(500, 1113) - F(22642, 50085),
        F(125, 192) - F(451, 720),
        F(-2187, 6784) - F(-12231, 42400),
        F(11, 84) - F(649, 6300),
        -F(1, 60),
    ),
    # Coefficients of theta, theta^2, theta^3, theta^4 for each stage.
    dense=(
        (1, F(-8048581381, 2820520608), F(8663915743, 2820520608), F(-12715105075, 11282082432)),
        (0, 0, 0, 0),
        (
            0,
            F(131558114200, 32700410799),
            F(-68118460800, 10900136933),
            F(87487479700, 32700410799),
        ),
        (
            0,
            F(-1754552775, 470086768),
            F(14199869525, 1410260304),
            F(-10690763975, 1880347072),
        ),
        (
            0,
            F(127303824393, 49829197408),
            F(-318862633887, 49829197408),
            F(701980252875, 199316789632),
        ),
        (0, F(-282668133, 205662961), F(2019193451, 616988883), F(-1453857185, 822651844)),
        (0, F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423)),
    ),
    source=(
        "J. R. Dormand and P. J. Prince, J. Comput. Appl. Math. 6 (1980) 19-26; embedded formula "
        "and dense output from L. F. Shampine, Math. Comp. 46 (1986) 135-150."
    ),
)
