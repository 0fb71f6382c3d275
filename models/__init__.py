"""Models trained by ``train.py``: LightningModules whose forward passes solve ODEs."""

from models.base import ODEModule
from models.latent_ode import LatentODEModule

__all__ = ["LatentODEModule", "ODEModule"]
