"""Which checkpoint a training run resumes from: the ``ckpt_path`` setting of ``train.py``.

* ``null``: start from scratch;
* a file: resume from it (it must exist);
* ``auto``: resume from this run's own newest state, ``<output_dir>/checkpoints/last.ckpt``
  (written by ``callbacks/last_checkpoint.yaml``), if it exists; else start from scratch.

``auto`` is what a job requeued by a cluster needs (``hydra/launcher=submitit_slurm`` with
``max_num_timeout > 0``, see ``configs/local/slurm_example.yaml``): submitit resubmits the job
with the same overrides, Hydra puts it into the same output folder (the sweep folder's
``${now:...}`` is resolved once, in the pickled sweep config), and the second attempt finds the
``last.ckpt`` the first one wrote. A fresh run's folder holds no checkpoint, so ``auto`` is
harmless there.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = "auto"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def resume_checkpoint(ckpt_path: str | Path | None, output_dir: str | Path) -> str | None:
    """The checkpoint to resume from for the setting ``ckpt_path`` (module docstring) of a run
    writing into ``output_dir``; ``None``: start from scratch."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == AUTO:
        last = Path(output_dir) / LAST_CHECKPOINT
        if last.is_file():
            log.info(f"ckpt_path=auto: resuming from this run's {last}")
            return str(last)
        log.info(f"ckpt_path=auto: no {last} yet, starting from scratch")
        return None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path must name an existing checkpoint to resume from (or be '{AUTO}'), "
            f"got '{ckpt_path}'"
        )
    return str(ckpt_path)
