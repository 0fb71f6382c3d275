"""node: torchdiffeq-compatible neural-ODE solvers in pure PyTorch.

``from node import odeint`` is a drop-in replacement for ``from torchdiffeq import odeint``;
:func:`solve` additionally returns statistics and a status.
"""

from node.adjoint import odeint_adjoint
from node.errors import SolverError, Status, TimeOrderError
from node.events import odeint_event
from node.methods import available_methods, get_tableau, register_method
from node.odeint import odeint
from node.options import AdaptiveOptions, FixedGridOptions
from node.solution import Solution
from node.solve import solve
from node.tableau import ButcherTableau

__all__ = [
    "AdaptiveOptions",
    "ButcherTableau",
    "FixedGridOptions",
    "Solution",
    "SolverError",
    "Status",
    "TimeOrderError",
    "available_methods",
    "get_tableau",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
    "register_method",
    "solve",
]
