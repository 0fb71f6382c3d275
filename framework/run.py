"""The training pipeline behind ``train.py``: build everything from the config, fit, test, plot,
and report where the results went.

Steps of :func:`train`:

1. seed every generator (``seed``), build the data module, the model (its solver from the
   ``solver`` group, its data shapes from the data module), the callbacks, loggers and trainer,
   all with ``hydra.utils.instantiate``;
2. fit (resuming from ``ckpt_path`` if given; ``ckpt_path=auto``: from the run's own
   ``checkpoints/last.ckpt`` if it exists, :mod:`framework.resume`); a ``node.SolverError``
   stops the run with a :class:`~framework.failure.TrainingSolverFailure` naming epoch, batch
   and diagnosis;
3. test on the best checkpoint (the current weights if no checkpoint was written; with
   ``train=false``, the checkpoint ``ckpt_path``);
4. write the model's plots and ``metrics.json`` (final metrics, the best checkpoint's score as
   ``best/<monitor>``, evaluation counts, wall time, paths) into the run's output folder, and
   log where checkpoints, metrics and plots are.

With several processes (``trainer=ddp``, ``trainer=ddp_sim``; :mod:`framework.distributed`)
every rank runs this pipeline; the logged metrics are means over the ranks (``sync_dist``, see
:meth:`models.base.ODEModule.log`), the evaluation counts of ``metrics.json`` are summed over the
ranks first, and rank zero alone writes the outputs and the report (Lightning already saves
checkpoints and metric logs from rank zero only). A solver failure stops every rank; rank zero
raises :class:`~framework.failure.TrainingSolverFailure`, the others log it and return (exiting
normally, so that Lightning's watch over its child processes does not kill rank zero before it
has reported).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

import node
from framework.distributed import distributed_run, sum_over_ranks
from framework.failure import SolverFailureMonitor, TrainingSolverFailure
from framework.instantiate import instantiate_callbacks, instantiate_loggers
from framework.outputs import (
    METRICS_FILE,
    float_metrics,
    metrics_locations,
    single_console_logging,
    task_overrides,
    torch_threads,
    write_plots,
    write_result,
)
from framework.resume import resume_checkpoint

log = logging.getLogger(__name__)

def _evaluation_metrics(model: Any, trainer: L.Trainer) -> dict[str, float]:
    """Per-step means of the model's evaluation counts. Under DDP (a collective, called on every
    rank) the counts are summed over the ranks: the per-step figures are then means over ranks
    and steps, ``nfe_total`` is the work of all ranks, and ``train_steps`` stays the steps of
    one rank (every rank takes the same steps)."""
    totals = getattr(model, "totals", None)
    if not totals:
        return {}
    totals = sum_over_ranks(totals, trainer.strategy.root_device)
    totals["train_steps"] /= trainer.world_size
    steps = max(totals["train_steps"], 1) * trainer.world_size
    return {
        "train_steps": float(totals["train_steps"]),
        "nfe_forward_per_step": totals["nfe_forward"] / steps,
        "nfe_backward_per_step": totals["nfe_backward"] / steps,
        "steps_forward_per_step": totals["steps_forward"] / steps,
        "steps_backward_per_step": totals["steps_backward"] / steps,
        "nfe_total": float(totals["nfe_forward"] + totals["nfe_backward"]),
    }


def _last_checkpoint(trainer: L.Trainer) -> str:
    """This run's newest checkpoint: the file of a checkpoint callback without a monitor
    (``callbacks/last_checkpoint.yaml``), else a ``save_last`` copy, else ``""``."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", "") is None and callback.best_model_path:
            return callback.best_model_path
    return next((cb.last_model_path for cb in trainer.checkpoint_callbacks
                 if getattr(cb, "last_model_path", "")), "")


def _log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    if not trainer.loggers:
        return
    params = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("datamodule", "solver", "trainer")
        if key in cfg
    }
    params["seed"] = cfg.get("seed")
    params["ckpt_path"] = cfg.get("ckpt_path")
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline of the module docstring; returns the content of ``metrics.json``.

    ``cfg.num_threads`` (if set) is torch's intra-op thread count during the run; the previous
    count is restored afterwards.
    """
    with torch_threads(cfg.get("num_threads")), distributed_run():
        return _train(cfg)


def build_model(model_cfg: DictConfig, solver: node.SolverConfig, **dims: Any) -> L.LightningModule:
    """The model of ``model_cfg`` with the built ``solver`` and the data's ``dims``.

    The solver object is passed after instantiation (a partial), so that Hydra does not turn it
    into a config node and back into a dict. A partial instantiation leaves out a mandatory
    value that is not set (``???``), so that the class default would silently stand in for it:
    such values are an error here, naming them."""
    try:
        OmegaConf.to_container(model_cfg, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        raise ValueError(f"the model config needs a value that is not set: {err.msg} (give it on "
                         "the command line, e.g. key=value)") from None
    make = hydra.utils.instantiate(model_cfg, **dims, _convert_="all", _partial_=True)
    return make(solver=solver)


def _train(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    single_console_logging()
    output_dir = Path(cfg.paths.output_dir)
    # a file, or with ckpt_path=auto this run's own last.ckpt (a requeued cluster job)
    resume = resume_checkpoint(cfg.get("ckpt_path"), output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info(f"Instantiating datamodule <{cfg.datamodule._target_}>")
    datamodule = hydra.utils.instantiate(cfg.datamodule, _convert_="all")
    # the solver group builds a node.SolverConfig, validated once, which the model receives
    solver = hydra.utils.instantiate(cfg.solver)
    log.info(f"Instantiating model <{cfg.model._target_}> with solver {solver}")
    model = build_model(cfg.model, solver, **datamodule.model_dims())
    monitor = SolverFailureMonitor()
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), monitor]
    loggers = instantiate_loggers(cfg.get("logger"))
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    _log_config(trainer, cfg)
    if trainer.global_rank > 0:
        # one report per run: the other ranks log warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)

    def solver_failure(err: node.SolverError) -> TrainingSolverFailure:
        # the newest state on disk: this run's last.ckpt, else the checkpoint it resumed from
        ckpt = trainer.checkpoint_callback
        last = _last_checkpoint(trainer) or resume or ""
        last = last or getattr(ckpt, "best_model_path", "")
        failure = TrainingSolverFailure(monitor.describe(err, last or None))
        if trainer.global_rank > 0:
            log.error(f"rank {trainer.global_rank}: {failure}")
        return failure

    def failed(failure: TrainingSolverFailure) -> dict[str, Any]:
        # a rank other than zero, after a failure that rank zero reports (module docstring)
        return {"status": "failed", "error": str(failure), "metrics": {}, "paths": {}}

    if cfg.get("train", True):
        log.info("Starting training")
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        except node.SolverError as err:
            failure = solver_failure(err)
            if trainer.global_rank > 0:
                return failed(failure)
            raise failure from err
    fit_time = time.perf_counter() - start
    metrics = float_metrics(trainer.callback_metrics)

    # read before testing: trainer.test(ckpt_path=best) restores the callback's state as it was
    # when the best checkpoint was written
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    score = getattr(ckpt_cb, "best_model_score", None)
    if score is not None and getattr(ckpt_cb, "monitor", None):
        # the score that chose the best checkpoint: what to pick a run of a seed sweep by, where
        # the final val/* metrics are only those of the last validation
        metrics[f"best/{ckpt_cb.monitor}"] = float(score)
    last = _last_checkpoint(trainer)
    if cfg.get("test", True):
        # evaluate the best checkpoint of this fit; with train=false, the one given as ckpt_path
        tested = best or (None if cfg.get("train", True) else resume)
        log.info(f"Testing {'checkpoint ' + tested if tested else 'current weights'}")
        try:
            trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        except node.SolverError as err:
            failure = solver_failure(err)
            if trainer.global_rank > 0:
                return failed(failure)
            raise failure from err
        metrics.update(float_metrics(trainer.callback_metrics))

    metrics.update(_evaluation_metrics(model, trainer))
    plots = []
    if trainer.is_global_zero:
        plots = write_plots(cfg.get("plots"), model, datamodule, output_dir)
    if trainer.world_size > 1:
        metrics["world_size"] = float(trainer.world_size)
    metrics["fit_time_s"] = fit_time
    metrics["wall_time_s"] = time.perf_counter() - start
    metrics["epochs"] = float(trainer.current_epoch)
    metrics["global_step"] = float(trainer.global_step)
    metrics = dict(sorted(metrics.items()))
    result = {
        "status": "ok",
        "overrides": task_overrides(),
        "metrics": metrics,
        "paths": {
            "output_dir": str(output_dir),
            "best_checkpoint": best,
            "last_checkpoint": last,
            "resumed_from": resume or "",
            "metrics": metrics_locations(trainer),
            "plots": plots,
        },
    }
    if trainer.is_global_zero:
        write_result(output_dir, result)
        report(result)
    return result


def report(result: dict[str, Any]) -> None:
    """Log where the run's outputs are."""
    paths, metrics = result["paths"], result["metrics"]
    lines = [f"Run finished in {metrics['wall_time_s']:.1f} s. Outputs in {paths['output_dir']}"]
    if paths["best_checkpoint"] or paths["last_checkpoint"]:
        best = paths["best_checkpoint"] or "-"
        scores = [
            f"{key.removeprefix('best/')}={value:.4g}"
            for key, value in metrics.items()
            if key.startswith("best/")
        ]
        lines.append(f"  best checkpoint: {best}" + (f" ({scores[0]})" if scores else ""))
        lines.append(f"  last checkpoint: {paths['last_checkpoint'] or '-'}")
    else:
        lines.append("  checkpoints: none written (checkpointing disabled or fast_dev_run)")
    for place in paths["metrics"]:
        lines.append(f"  metrics log: {place}")
    lines.append(f"  final metrics: {Path(paths['output_dir']) / METRICS_FILE}")
    for plot in paths["plots"]:
        lines.append(f"  plot: {plot}")
    shown = [k for k in ("test/extrap_rmse", "test/interp_mse", "test/elbo") if k in metrics]
    shown += [k for k in ("nfe_forward_per_step", "nfe_backward_per_step") if k in metrics]
    if shown:
        lines.append("  " + ", ".join(f"{k}={metrics[k]:.4g}" for k in shown))
    log.info("\n".join(lines))
