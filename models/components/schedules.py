"""Learning-rate schedules shared by the models (``model.scheduler`` in the configs).

* ``none``: the optimizer's constant rate;
* ``multistep``: the rate times ``gamma`` at each epoch listed in ``milestones``;
* ``cosine``: :math:`\\eta_e = \\tfrac12 \\eta_0 (1 + \\cos(\\pi e / E))`, from the initial
  rate to 0 over the trainer's ``max_epochs`` :math:`E` (Loshchilov & Hutter, 2017, no restarts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SCHEDULERS = ("none", "multistep", "cosine")


def check_scheduler(scheduler, milestones: Sequence[int] = (), gamma: float = 0.1) -> str:
    """Validate ``model.scheduler`` and its settings; returns ``scheduler``."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"model.scheduler must be one of {list(SCHEDULERS)}, got {scheduler!r}")
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones):
        raise ValueError(f"model.lr_milestones must be a list of epochs, got {milestones!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma > 0:
        raise ValueError(f"model.lr_gamma must be a number > 0, got {gamma!r}")
    return scheduler


def with_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: str,
    max_epochs: int | None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
):
    """What ``configure_optimizers`` returns: the optimizer alone or with its epoch schedule."""
    if scheduler == "none":
        return optimizer
    if scheduler == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(milestones), gamma=gamma
        )
    else:
        if not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(
                f"model.scheduler='cosine' needs trainer.max_epochs >= 1, got {max_epochs!r}"
            )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
