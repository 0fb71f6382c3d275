"""Explicit Euler method: one stage, order 1.

L. Euler, *Institutionum calculi integralis*, vol. 1, 1768. Same method as torchdiffeq's
``euler`` (torchdiffeq/_impl/fixed_grid.py, class ``Euler``).
"""

from node.tableau import ButcherTableau

TABLEAU = ButcherTableau(
    name="euler",
    order=1,
    c=(0,),
    a=((),),
    b=(1,),
    b_error=None,
    dense=None,
    source="L. Euler, Institutionum calculi integralis, 1768.",
)
