"""Data-parallel training (``trainer=ddp``, ``trainer=ddp_sim``): Lightning's DDP made safe for
adaptive ODE solvers, and usable from Hydra sweeps.

:class:`SolverSafeDDPStrategy` is Lightning's ``DDPStrategy`` with three changes:

* **A solver failure stops every rank together.** Adaptive solvers take a different number of
  steps on each rank, and a ``node.SolverError`` may hit one rank only; the others must not wait
  for it in a collective until the process group's timeout. The model's forward pass
  (:meth:`models.base.ODEModule.training_step`), the backward pass, and every validation and
  test step end with a one-scalar all-reduce of a failure flag
  (:func:`models.components.distributed.run_on_every_rank`): if any rank failed, all raise the
  failing rank's diagnosis, and :func:`framework.run.train` reports it.
* **Gradients are averaged after the backward pass, not during it.** DDP normally all-reduces
  gradient buckets while ``backward()`` runs; if the backward pass fails on one rank (an
  adjoint's backward solve), the others would block in those all-reduces. Here DDP's
  communication hook only hands each bucket back unchanged, and once every rank's backward pass
  (and the failure flag) is through, the gradients are averaged in one all-reduce per dtype --
  the same mean as DDP's, without the overlap of communication and computation, which does not
  matter for models of this size. A parameter that got no gradient on some rank counts as zero
  there (DDP's convention); one that got none anywhere keeps ``grad=None``.
* **Hydra multiruns work.** Lightning starts ranks 1.. by re-running the command line; in a
  multirun (``-m``) a child would restart the whole sweep (or, with ``--multirun`` last, fail to
  parse the arguments Lightning appends, and Lightning then kills the sweep: seen with Lightning
  2.6). :class:`HydraJobLauncher` re-runs only the current job: its own overrides, in its own
  output folder.

Rank zero writes the run's outputs (:func:`framework.run.train`); :func:`distributed_run` makes
the next run of the same process (a sweep's next job) start from a clean slate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script as lightning_launcher
from torch.nn.parallel import DistributedDataParallel

from models.components.distributed import run_on_every_rank, world_size

# what Lightning's subprocess launcher puts into the launching process's environment
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _bucket_unchanged(state, bucket):  # no annotations: DDP checks them, and would see strings
    """DDP communication hook that communicates nothing (see the module docstring)."""
    future: torch.futures.Future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


class SolverSafeDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose ranks stop together on a solver failure (module docstring).

    Takes ``DDPStrategy``'s arguments (``find_unused_parameters``, ``process_group_backend``,
    ``timeout``, ...) except a communication hook, which would undo the deferred averaging."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name in ("ddp_comm_hook", "ddp_comm_state", "ddp_comm_wrapper"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"{name} must be None with SolverSafeDDPStrategy (its gradients are averaged "
                    f"after the backward pass), got {kwargs[name]!r}"
                )
        super().__init__(*args, **kwargs)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method == "popen":
            self._launcher = HydraJobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )

    def configure_ddp(self) -> None:
        super().configure_ddp()
        self.model.register_comm_hook(None, _bucket_unchanged)

    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any):
        # Strategy.backward, with the flag exchange and the gradient averaging between the
        # backward pass and the on_after_backward hooks (which may log with sync_dist)
        module = self.lightning_module
        self.pre_backward(closure_loss)
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        precision = self.precision_plugin
        run_on_every_rank(
            lambda: precision.backward(closure_loss, module, optimizer, *args, **kwargs),
            self.root_device,
        )
        # DDP's no_sync() (gradient accumulation) turns the reduction off until the last batch
        ddp = self.model if isinstance(self.model, DistributedDataParallel) else None
        if ddp is not None and ddp.require_backward_grad_sync:
            average_gradients(list(module.parameters()), self.root_device)
        closure_loss = self.precision_plugin.post_backward(closure_loss, module)
        self.post_backward(closure_loss)
        return closure_loss

    def validation_step(self, *args: Any, **kwargs: Any):
        return run_on_every_rank(lambda: super(SolverSafeDDPStrategy, self).validation_step(
            *args, **kwargs), self.root_device)

    def test_step(self, *args: Any, **kwargs: Any):
        return run_on_every_rank(lambda: super(SolverSafeDDPStrategy, self).test_step(
            *args, **kwargs), self.root_device)


def average_gradients(params: list[torch.nn.Parameter], device: torch.device) -> None:
    """Replace each gradient by its mean over the ranks (a missing one counts as zero); one
    all-reduce for which parameters have a gradient, one per dtype for the values."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    n = world_size()
    present = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(present)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.dtype, p.device), []).append(i)
    for indices in groups.values():
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in (params[i] for i in indices)
        ])
        dist.all_reduce(flat)
        flat /= n
        for i, chunk in zip(indices, flat.split([params[i].numel() for i in indices]), strict=True):
            p = params[i]
            if present[i] == 0:
                continue  # no rank computed a gradient: leave None, as DDP does
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))


class HydraJobLauncher(lightning_launcher._SubprocessScriptLauncher):
    """Lightning's launcher of ranks 1.. as copies of the command line, which in a Hydra
    multirun re-runs the current job only (as a single run in the job's folder)."""

    def _call_children_scripts(self) -> None:
        if not _in_hydra_multirun():
            return super()._call_children_scripts()
        with mock.patch.object(lightning_launcher, "_hydra_subprocess_cmd", _job_command):
            return super()._call_children_scripts()


def _in_hydra_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_command(local_rank: int) -> tuple[list[str], str]:
    """The command of rank ``local_rank`` for the current job of a multirun, and its folder:
    Lightning's single-run command (``fabric_launcher._hydra_subprocess_cmd``) with the job's
    overrides in place of the sweep's command line."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    with mock.patch.object(sys, "argv", [sys.argv[0], *hydra_cfg.overrides.task]):
        command, cwd = fabric_launcher._hydra_subprocess_cmd(local_rank)
    # Lightning points the child at hydra.run.dir (a single run's folder); a job's is its own
    command = [arg for arg in command if not arg.startswith("hydra.run.dir=")]
    command.append(f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"')
    return command, cwd


@contextmanager
def distributed_run() -> Iterator[None]:
    """A run that may start a process group: afterwards the group it started is destroyed and
    the launch variables are as before, so that the next run in this process (a sweep's next
    job) starts its own ranks instead of taking itself for a rank of the finished run."""
    saved = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    had_group = dist.is_available() and dist.is_initialized()  # one of the caller's: kept
    try:
        yield
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sum_over_ranks(values: dict[str, float], device: torch.device | str = "cpu"
                   ) -> dict[str, float]:
    """``values`` summed over the ranks (a collective; unchanged in one process)."""
    if world_size() == 1 or not values:
        return dict(values)
    total = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return dict(zip(values, total.tolist(), strict=True))
