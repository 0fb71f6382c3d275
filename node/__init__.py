"""node: torchdiffeq-compatible neural-ODE solvers in pure PyTorch.

``from node import odeint`` is a drop-in replacement for ``from torchdiffeq import odeint``;
:func:`solve` additionally returns statistics and a status; :class:`SolverConfig` holds all of
its settings as one validated value.
"""

from node.api import odeint, odeint_adjoint, odeint_event, solve
from node.config import SolverConfig
from node.errors import GrowthWarning, SolverError, Status, TimeOrderError
from node.implicit_tableau import ImplicitTableau
from node.methods import available_methods, get_tableau, register_method
from node.options import (
    AdamsOptions,
    AdaptiveOptions,
    FixedGridOptions,
    ImplicitAdaptiveOptions,
    ImplicitFixedGridOptions,
)
from node.solution import Solution
from node.tableau import ButcherTableau

__all__ = [
    "AdamsOptions",
    "AdaptiveOptions",
    "ButcherTableau",
    "FixedGridOptions",
    "ImplicitAdaptiveOptions",
    "ImplicitFixedGridOptions",
    "ImplicitTableau",
    "Solution",
    "SolverConfig",
    "SolverError",
    "GrowthWarning",
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
