"""What a run leaves behind and how it is set up, shared by ``train.py`` and ``eval.py``
(:mod:`framework.run`, :mod:`framework.evaluate`): ``metrics.json``, the model's plots, where the
metric logs went, the task's overrides, torch's thread count and console logging."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

METRICS_FILE = "metrics.json"


def float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a Lightning metrics dict, as floats."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def task_overrides() -> list[str]:
    """The command-line overrides of the Hydra task (none outside Hydra)."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def metrics_locations(trainer: L.Trainer) -> list[str]:
    """Where the trainer's loggers write the metrics."""
    places = []
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            places.append(str(Path(logger.log_dir) / "metrics.csv"))
        elif isinstance(logger, TensorBoardLogger):
            places.append(f"{logger.log_dir} (TensorBoard)")
    return places


def single_console_logging() -> None:
    """``import lightning`` attaches its own console handler to the ``lightning`` logger, which
    also propagates to the root logger that Hydra configures: every message would print twice.
    Under Hydra (root handlers present) keep only the root's handlers."""
    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (if given) inside, restored afterwards."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_plots(plot_cfg, model: L.LightningModule, datamodule, output_dir: Path) -> list[str]:
    """The model's figures of ``plots.n_examples`` examples of ``plots.split`` into
    ``output_dir/plots`` (``plot_cfg``: the ``plots`` config node, or None); their paths."""
    plot_cfg = plot_cfg or {}
    if not plot_cfg.get("enabled", True) or not hasattr(model, "write_plots"):
        return []
    batch = datamodule.example_batch(plot_cfg.get("split", "test"), plot_cfg.get("n_examples", 4))
    return [str(p) for p in model.write_plots(batch, output_dir / "plots")]


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file renamed over it. The jobs of a parallel
    sweep (``hydra/launcher=joblib``, submitit) read each other's files to summarise the sweep:
    a reader then sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(output_dir: Path, result: dict[str, Any]) -> None:
    """``result`` as ``output_dir/metrics.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / METRICS_FILE, json.dumps(result, indent=2))
