"""Implicit (backward) Euler method: one implicit stage, order 1, L-stable.

    k = f(t0 + h, y0 + h k),   y1 = y0 + h k.

Hairer and Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996,
sec. IV.3 (the Radau IIA method with one stage). torchdiffeq's ``implicit_euler`` is the same
method (torchdiffeq/_impl/fixed_grid_implicit.py).
"""

from node.implicit_tableau import ImplicitTableau

TABLEAU = ImplicitTableau(
    name="implicit_euler",
    order=1,
    c=(1,),
    a=((1,),),
    b=(1,),
    source=(
        "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer "
        "1996, sec. IV.3 (one-stage Radau IIA)."
    ),
)
