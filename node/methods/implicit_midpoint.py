"""Implicit midpoint rule: the one-stage Gauss method, order 2, A-stable (not L-stable).

    k = f(t0 + h/2, y0 + h/2 k),   y1 = y0 + h k.

Symmetric and symplectic; its stability function ``R(z) = (1 + z/2) / (1 - z/2)`` has
``|R(iy)| = 1`` and ``R(-inf) = -1``, so very stiff components are not damped but flip sign.
J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964) 50-64 (Gauss methods);
Hairer and Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996,
sec. IV.5. torchdiffeq's ``implicit_midpoint`` is the same method.
"""

from fractions import Fraction

from node.implicit_tableau import ImplicitTableau

TABLEAU = ImplicitTableau(
    name="implicit_midpoint",
    order=2,
    c=(Fraction(1, 2),),
    a=((Fraction(1, 2),),),
    b=(1,),
    source=(
        "J. C. Butcher, Implicit Runge-Kutta processes, Math. Comp. 18 (1964) 50-64; "
        "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer "
        "1996, sec. IV.5 (one-stage Gauss method)."
    ),
)
