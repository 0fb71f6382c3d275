"""Stopping a run cleanly when the ODE solver fails.

:class:`SolverFailureMonitor` remembers where training was (stage, epoch, batch, global step).
When a ``node.SolverError`` escapes from ``trainer.fit`` (a step budget exhausted, a non-finite
state, a step size underflow, in the forward pass or in an adjoint's backward solve),
:func:`framework.run.train` raises :class:`TrainingSolverFailure` with a message that names that
position, the solver's own diagnosis, and the last checkpoint written before the failure (the
``last_checkpoint`` callback's ``last.ckpt``, which the failed epoch leaves untouched). Under
DDP the failure of one rank stops every rank at the same step, and the message names that rank
(:mod:`framework.distributed`).
"""

from __future__ import annotations

from typing import Any

import lightning as L


class TrainingSolverFailure(RuntimeError):
    """The ODE solver failed during a run; the message says where and why."""


class SolverFailureMonitor(L.Callback):
    """Tracks the training position for :class:`TrainingSolverFailure` messages."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.epoch = 0
        self.batch_idx: int | None = None
        self.global_step = 0

    def _at(self, trainer: L.Trainer, stage: str, batch_idx: int) -> None:
        self.stage = stage
        self.epoch = trainer.current_epoch
        self.batch_idx = batch_idx
        self.global_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._at(trainer, "training", batch_idx)

    def on_validation_batch_start(
        self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        stage = "sanity check" if trainer.sanity_checking else "validation"
        self._at(trainer, stage, batch_idx)

    def on_test_batch_start(
        self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._at(trainer, "test", batch_idx)

    def describe(self, error: BaseException, last_checkpoint: str | None) -> str:
        where = f"{self.stage}, epoch {self.epoch}, batch {self.batch_idx}"
        kept = (
            f"the last good checkpoint is {last_checkpoint}"
            if last_checkpoint
            else "no checkpoint had been written yet"
        )
        # under DDP the error names the failing rank (models.components.distributed)
        several = getattr(error, "world_size", 1) > 1
        stopped = "Every rank stopped" if several else "Training stopped"
        return (
            f"ODE solver failed during {where} (global step {self.global_step}): {error}. "
            f"{stopped}; {kept}. Possible remedies: a larger solver.max_num_steps, "
            "looser solver.rtol/atol, a smaller model.lr, another solver."
        )
