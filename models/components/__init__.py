"""Building blocks of the models: the configurable ODE solver, networks, encoders, objectives."""

from models.components.counting import EvaluationCounter, EvaluationCounts
from models.components.mlp import MLP, AutonomousField
from models.components.ode_solver import GRADIENT_MODES, ODESolver

__all__ = [
    "GRADIENT_MODES",
    "MLP",
    "AutonomousField",
    "EvaluationCounter",
    "EvaluationCounts",
    "ODESolver",
]
