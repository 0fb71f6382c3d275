"""Models trained by ``train.py``: LightningModules whose forward passes solve ODEs.

* :class:`LatentODEModule`: latent ODE for irregularly sampled time series (Chen et al. 2018,
  recognition-RNN encoder; Rubanova et al. 2019, ODE-RNN encoder);
* :class:`ODENetModule`: ODE-Net image classifier (Chen et al. 2018), optionally augmented (ANODE);
* :class:`CNFModule`: continuous normalizing flow (FFJORD, Grathwohl et al. 2019), with RNODE's
  kinetic-energy and Jacobian-Frobenius regularisers (Finlay et al. 2020);
* :class:`ODEModule`: their shared base (solver statistics logging, optimiser setup).

Their building blocks (solver wrapper, encoders, ODE blocks, CNF dynamics) are in
:mod:`models.components`.
"""

from models.base import ODEModule
from models.cnf import CNFModule
from models.latent_ode import LatentODEModule
from models.odenet import ODENetModule

__all__ = ["CNFModule", "LatentODEModule", "ODEModule", "ODENetModule"]
