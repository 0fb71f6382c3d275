"""Base LightningModule of the ODE models: evaluation accounting and self-describing checkpoints.

Accounting, per training step (the quantities of the ODE-Net paper's figures):

* ``nfe/forward``, ``steps/forward``: function evaluations and solver steps of the forward pass
  (every :class:`~models.components.ODESolver` inside the model, summed);
* ``nfe/backward``, ``steps/backward``: the same during ``loss.backward()`` (zero with
  ``gradient=direct``; the adjoint solve with ``adjoint``; the recomputation with ``checkpoint``).

:attr:`ODEModule.totals` keeps running sums over the run (for the run summary).

Checkpoints record the import paths of the model and data module classes under
``checkpoint["node_framework"]``, so :func:`framework.checkpoint.load_model` rebuilds both from
the file alone (their constructor arguments are saved by ``save_hyperparameters``).

:meth:`ODEModule.configure_optimizers` builds every model's optimizer and learning-rate schedule
from the hyperparameters it saves (``optimizer``, ``lr``, ``momentum``, ``weight_decay``,
``scheduler``, ``lr_milestones``, ``lr_gamma``; absent ones take the defaults listed there).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from models.components.counting import EvaluationCounts
from models.components.distributed import run_on_every_rank
from models.components.ode_solver import ODESolver
from models.components.schedules import with_schedule

CHECKPOINT_KEY = "node_framework"


def class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class ODEModule(L.LightningModule):
    """Subclasses implement :meth:`training_loss` (and their own validation/test steps)."""

    def __init__(self) -> None:
        super().__init__()
        self._backward_mark: EvaluationCounts | None = None
        self.totals = {
            "train_steps": 0,
            "nfe_forward": 0,
            "nfe_backward": 0,
            "steps_forward": 0,
            "steps_backward": 0,
        }

    def ode_solvers(self) -> list[ODESolver]:
        return [m for m in self.modules() if isinstance(m, ODESolver)]

    def evaluation_counts(self) -> EvaluationCounts:
        """Counters of all solvers of the model, summed (see :mod:`models.components.counting`)."""
        total = EvaluationCounts()
        for solver in self.ode_solvers():
            total = total + solver.counts()
        return total

    def configure_optimizers(self):
        """The optimizer of the saved hyperparameters, with its epoch schedule if any:

        * ``optimizer``: ``"adam"`` (default) or ``"sgd"`` (with ``momentum``, default 0);
        * rate ``self.lr`` (set by the subclass from ``lr``; an attribute so that a tuner can
          change it), ``weight_decay`` (default 0);
        * ``scheduler`` (default ``"none"``), ``lr_milestones``, ``lr_gamma``: see
          :mod:`models.components.schedules` (the subclasses validate them on construction).
        """
        hp = self.hparams
        # a model without a configurable optimizer or schedule (the CNF) saves neither; the
        # defaults here are those of the models that do
        name = hp.get("optimizer", "adam")
        weight_decay = float(hp.get("weight_decay", 0.0))
        # frozen parameters (a model's `trainable` parts) stay out of the optimiser
        params = [p for p in self.parameters() if p.requires_grad]
        if name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr,
                                  momentum=hp.get("momentum", 0.0), weight_decay=weight_decay)
        elif name == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"model.optimizer must be one of ['sgd', 'adam'], got {name!r}")
        return with_schedule(
            opt,
            hp.get("scheduler", "none"),
            self.trainer.max_epochs,
            hp.get("lr_milestones", ()),
            hp.get("lr_gamma", 0.1),
        )

    def training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and extra metrics to log under ``train/``."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss(batch)")

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``log``, with ``sync_dist=True`` unless told otherwise: under DDP every
        logged value is the mean over the ranks (each rank sees its own share of the data and
        its solver takes its own number of steps), so what the loggers, the checkpoint monitor
        and ``metrics.json`` see is the whole run's figure, not rank zero's. In one process it
        costs nothing. (torchmetrics objects reduce themselves, exactly, whatever the flag.)"""
        kwargs.setdefault("sync_dist", True)
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        before = self.evaluation_counts()
        # under DDP a solver failure on any rank stops every rank here, before the logging below
        # communicates (see models.components.distributed)
        loss, metrics = run_on_every_rank(lambda: self.training_loss(batch), self.device)
        used = self.evaluation_counts() - before
        self.totals["train_steps"] += 1
        self.totals["nfe_forward"] += used.nfe
        self.totals["steps_forward"] += used.steps
        batch_size = self._batch_size(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("nfe/forward", float(used.nfe), prog_bar=True, batch_size=batch_size)
        self.log("steps/forward", float(used.steps), batch_size=batch_size)
        return loss

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._backward_mark = self.evaluation_counts()

    def on_after_backward(self) -> None:
        if self._backward_mark is None:
            return
        used = self.evaluation_counts() - self._backward_mark
        self._backward_mark = None
        self.totals["nfe_backward"] += used.nfe
        self.totals["steps_backward"] += used.steps
        self.log("nfe/backward", float(used.nfe), prog_bar=True)
        self.log("steps/backward", float(used.steps))

    @staticmethod
    def _batch_size(batch: Any) -> int | None:
        if isinstance(batch, dict) and "values" in batch:
            return int(batch["values"].shape[0])
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = {"model_class": class_path(self)}
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None:
            info["datamodule_class"] = class_path(datamodule)
        checkpoint[CHECKPOINT_KEY] = info
