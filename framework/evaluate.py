"""The evaluation pipeline behind ``eval.py``: test a checkpoint written by ``train.py``.

Steps of :func:`evaluate`:

1. rebuild the model and its data module from the checkpoint alone
   (:mod:`framework.checkpoint`; ``datamodule`` entries of the config replace saved arguments,
   ``solver`` entries the model's saved solver settings: the same weights solved with another
   method, tolerance or step size);
2. seed every generator (``seed``), build the loggers and trainer from their groups and run
   Lightning's test loop on the data module's test split;
3. write the model's plots and ``metrics.json`` (the ``test/*`` metrics, wall time, paths) into
   the run's output folder, as the test stage of a training run does, and log where they are.

With several processes (``trainer=ddp_sim``, ...) every rank tests its share of the split (the
metrics are means over the ranks; Lightning's DistributedSampler repeats a few series to give
every rank as many) and rank zero alone writes the outputs, as in :mod:`framework.run`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from framework.checkpoint import load_datamodule, load_model
from framework.distributed import distributed_run
from framework.instantiate import instantiate_loggers
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

log = logging.getLogger(__name__)


def checkpoint_path(cfg: DictConfig) -> Path:
    """``cfg.ckpt_path``, checked to name an existing file."""
    value = "???" if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.get("ckpt_path")
    if not value or value == "???":
        raise ValueError(
            "ckpt_path must name a checkpoint written by train.py, e.g. "
            f"ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt; got {value!r}"
        )
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path must be an existing checkpoint file, got '{path}'")
    return path


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline of the module docstring; returns the content of ``metrics.json``.

    ``cfg.num_threads`` (if set) is torch's intra-op thread count during the run, as in
    :func:`framework.run.train`; the previous count is restored afterwards.
    """
    with torch_threads(cfg.get("num_threads")), distributed_run():
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    single_console_logging()
    ckpt = checkpoint_path(cfg)
    output_dir = Path(cfg.paths.output_dir)

    log.info(f"Loading model and data module from {ckpt}")
    solver = _mapping(cfg.get("solver"))
    model = load_model(ckpt, solver=solver)
    if solver:
        log.info(f"Solver settings replaced: {solver}")
    datamodule = load_datamodule(ckpt, **_mapping(cfg.get("datamodule")))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    loggers = instantiate_loggers(cfg.get("logger"))
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False)
    # the model already holds the checkpoint's weights: no ckpt_path for trainer.test
    trainer.test(model, datamodule=datamodule)
    metrics = float_metrics(trainer.callback_metrics)

    if trainer.global_rank > 0:
        return {"status": "ok", "metrics": metrics, "paths": {}}  # rank zero writes the outputs
    plots = write_plots(cfg.get("plots"), model, datamodule, output_dir)

    metrics["wall_time_s"] = time.perf_counter() - start
    result = {
        "status": "ok",
        "overrides": task_overrides(),
        "solver": _saved_solver(model),
        "metrics": dict(sorted(metrics.items())),
        "paths": {
            "output_dir": str(output_dir),
            "checkpoint": str(ckpt),
            "metrics": metrics_locations(trainer),
            "plots": plots,
        },
    }
    write_result(output_dir, result)
    report(result)
    return result


def _mapping(node_cfg) -> dict[str, Any]:
    return OmegaConf.to_container(node_cfg, resolve=True) if node_cfg else {}


def _saved_solver(model) -> dict[str, Any] | None:
    """The solver settings the model was evaluated with (as its hyperparameters hold them)."""
    solver = model.hparams.get("solver")
    return None if solver is None else {k: v for k, v in solver.items() if v is not None}


def report(result: dict[str, Any]) -> None:
    """Log the test metrics and where the outputs are."""
    paths, metrics = result["paths"], result["metrics"]
    lines = [f"Evaluated {paths['checkpoint']} in {metrics['wall_time_s']:.1f} s. "
             f"Outputs in {paths['output_dir']}"]
    if result.get("solver"):
        lines.append("  solver: " + ", ".join(f"{k}={v}" for k, v in result["solver"].items()))
    lines += [f"  {k}={v:.4g}" for k, v in metrics.items() if k.startswith("test/")]
    lines += [f"  metrics log: {place}" for place in paths["metrics"]]
    lines.append(f"  final metrics: {Path(paths['output_dir']) / METRICS_FILE}")
    lines += [f"  plot: {plot}" for plot in paths["plots"]]
    log.info("\n".join(lines))
