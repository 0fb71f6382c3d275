"""A Lightning callback that measures the process CPU time of each training epoch (issue 17).

On a shared machine wall time depends on the other processes; the CPU time this process spends
(``time.process_time``, all its threads) does not, much. Training time counts the training
batches only (forward, backward, optimiser step); validation is timed apart. At the end of the
fit the per-epoch times go to ``out`` (JSON) and to the log. Add it to a run with

    python train.py experiment=periodic_rubanova2019 \\
        +callbacks.cpu_time._target_=bench.epoch_cpu_time.EpochCPUTime \\
        +callbacks.cpu_time.out='${paths.output_dir}/epoch_cpu_time.json'
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from statistics import mean, median

import lightning as L

log = logging.getLogger(__name__)


class EpochCPUTime(L.Callback):
    """Per-epoch process CPU time of training batches and of validation (module docstring)."""

    def __init__(self, out: str | None = None) -> None:
        self.out = out
        self.train: list[float] = []
        self.val: list[float] = []
        self._epoch = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch += time.process_time() - self._start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train.append(self._epoch)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = time.process_time()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val.append(time.process_time() - self._val_start)

    def summary(self) -> dict:
        return {
            "train_epoch_cpu_s": self.train,
            "val_epoch_cpu_s": self.val,
            "train_epoch_cpu_s_mean": mean(self.train) if self.train else None,
            "train_epoch_cpu_s_median": median(self.train) if self.train else None,
            "val_epoch_cpu_s_mean": mean(self.val) if self.val else None,
        }

    def on_fit_end(self, trainer, pl_module) -> None:
        summary = self.summary()
        log.info("CPU time per training epoch: mean %.3f s, median %.3f s (%d epochs)",
                 summary["train_epoch_cpu_s_mean"] or 0.0,
                 summary["train_epoch_cpu_s_median"] or 0.0, len(self.train))
        if self.out:
            Path(self.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.out).write_text(json.dumps(summary, indent=1))
