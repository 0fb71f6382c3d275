"""Tsitouras 5(4) pair with its fourth-order interpolant: seven stages (FSAL), order 5.

Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
assumption", Comput. Math. Appl. 62(2) (2011), 770-775. torchdiffeq 0.2.5 has no ``tsit5``.

The method coefficients (``c``, ``a``, ``b``, ``b_hat``) are taken from diffrax
(patrick-kidger/diffrax, diffrax/_solver/tsit5.py), which lists them to about 88 digits; they
are rounded here to 25 significant digits. As noted in patrick-kidger/diffrax#98 and in
torchode's tsit5.py, the paper's table labelled b-hat lists the error weights ``b - b_hat``, and
its last entry has the wrong sign (SciML/OrdinaryDiffEq.jl#1654). With ``b_hat[6] = +1/66`` as
below, ``b_hat`` sums to 1 and has order 4 (checked by the tests).

The interpolant ``b_i(theta)`` is the paper's, given there in factored form (e.g.
``b_7(theta) = 2.5 theta^2 (theta - 1)(theta - 0.6)``; factored numbers as quoted in diffrax's
``_Tsit5Interpolation``). It is written here expanded into powers of theta, rounded to 20
significant digits; the theta coefficient of ``b_1`` is set to exactly 1 (the interpolant's slope
at theta = 0 is ``k_1``), which the factored numbers reproduce to 3e-17.
"""

from fractions import Fraction as F

from node.tableau import ButcherTableau

# Numbers: diffrax, diffrax/_solver/tsit5.py (c, a, b, b_hat rounded; interpolant expanded).
TABLEAU = ButcherTableau(
    name="tsit5",
    order=5,
    c=(0, F(161, 1000), F(327, 1000), F(9, 10), 0.9800255409045096857298103, 1, 1),
    a=(
        (),
        (F(161, 1000),),
        (-0.008480655492356988544426874, 0.3354806554923569885444269),
        (2.897153057105493432130433, -6.359448489975074843148160, 4.362295432869581411017727),
        (
            5.325864828439256604428878,
            -11.74888356406282787774717,
            7.495539342889836208304605,
            -0.09249506636175524925650208,
        ),
        (
            5.861455442946420028659251,
            -12.92096931784710929170612,
            8.159367898576158643180401,
            -0.07158497328140099722453054,
            -0.02826905039406838290900306,
        ),
        (
            0.09646076681806522951816731,
            F(1, 100),
            0.4798896504144995747752495,
            1.379008574103741893192275,
            -3.290069515436080679901048,
            2.324710524099773982415356,
        ),
    ),
    b=(
        0.09646076681806522951816731,
        F(1, 100),
        0.4798896504144995747752495,
        1.379008574103741893192275,
        -3.290069515436080679901048,
        2.324710524099773982415356,
        0,
    ),
    # b - b_hat, written out as differences of the two columns.
    b_error=(
        0.09646076681806522951816731 - 0.09468075576583945807478876,
        0.01 - 0.009183565540343253096776364,
        0.4798896504144995747752495 - 0.4877705284247615707855643,
        1.379008574103741893192275 - 1.234297566930478985655110,
        -3.290069515436080679901048 - -2.707712349983525454881110,
        2.324710524099773982415356 - 1.866628418170587035753719,
        -F(1, 66),
    ),
    # Coefficients of theta, theta^2, theta^3, theta^4 for each stage.
    dense=(
        (1, -2.7637061972748259113, 2.9132554618219127438, -1.0530884977290216000),
        (0, 0.1317, -0.2234, 0.1017),
        (0, 3.9302962368947515285, -5.9410338721315047347, 2.4906272856512527930),
        (0, -12.411077166933676984, 30.338188630282321598, -16.548102889244902720),
        (0, 37.509313416511039195, -88.178904894766401101, 47.379521962819281220),
        (0, -27.896526289197287806, 65.091894674793671526, -34.870657861496609740),
        (0, F(3, 2), -4, F(5, 2)),
    ),
    source=(
        "Ch. Tsitouras, Runge-Kutta pairs of order 5(4) satisfying only the first column "
        "simplifying assumption, Comput. Math. Appl. 62 (2011) 770-775."
    ),
)
