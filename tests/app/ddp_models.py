"""A test-only model for tests/app/test_ddp.py: a latent ODE that checks data parallelism.

* At the end of training it compares its parameters across the ranks and raises if they differ
  (gradients not averaged alike on every rank).
* With ``fail_rank`` set, from epoch ``fail_epoch`` on, that rank solves with a step budget of one
  step: the forward solve of training fails (``fail_in="forward"``), or, with
  ``solver.gradient=adjoint``, the adjoint's backward solve (``fail_in="backward"``), or the
  solve of validation (``fail_in="validation"``). The other ranks solve normally: a real
  ``node.SolverError`` on one rank only.

``train.py`` imports it by its ``_target_``:
``model._target_=tests.app.ddp_models.DDPProbeLatentODE``.
"""

from __future__ import annotations

import dataclasses

import torch

from models import LatentODEModule
from models.components.ode_solver import solver_config


class DDPProbeLatentODE(LatentODEModule):
    def __init__(self, *, fail_rank: int | None = None, fail_epoch: int = 1,
                 fail_in: str = "forward", **kwargs) -> None:
        # Lightning's save_hyperparameters reads this frame too: the solver as the plain dict
        # that LatentODEModule saves
        if "solver" in kwargs:
            kwargs["solver"] = solver_config(kwargs["solver"]).to_dict()
        super().__init__(**kwargs)
        self.fail_rank = fail_rank
        self.fail_epoch = fail_epoch
        self.fail_in = fail_in

    def on_train_epoch_start(self) -> None:
        if self.fail_in != "validation":
            self._cut_budget()

    def on_validation_epoch_start(self) -> None:
        if self.fail_in == "validation":
            self._cut_budget()

    def _cut_budget(self) -> None:
        if self.global_rank != self.fail_rank or self.current_epoch != self.fail_epoch:
            return
        budget = {"max_num_steps": 1}
        # the adjoint solves each interval between output times on its own: with a tolerance
        # this tight none of them fits in one step
        change = budget if self.fail_in != "backward" else {
            "adjoint_options": budget, "adjoint_rtol": 1e-12, "adjoint_atol": 1e-12}
        for solver in self.ode_solvers():
            solver.config = dataclasses.replace(solver.config, **change)

    def on_train_end(self) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in self.parameters()])
        gathered = self.all_gather(flat).reshape(-1, flat.numel())
        spread = (gathered - gathered[0]).abs().max().item()
        if spread > 1e-6:
            raise RuntimeError(f"parameters differ across ranks after training by up to {spread}")
