"""A stand-in for a cluster's time limit in the submitit tests (tests/app/test_sweep_launchers.py):
a Lightning callback that sends its own process the signal SLURM sends before a time limit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PreemptOnce(Callback):
    """At the start of the second training epoch (the first one's last.ckpt is on disk), send
    this process USR2, submitit's requeue signal, unless ``marker`` exists; writes ``marker``
    first, so that the requeued attempt runs to the end."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and not self.marker.exists():
            self.marker.write_text(f"preempted at step {trainer.global_step}\n")
            os.kill(os.getpid(), signal.SIGUSR2)
