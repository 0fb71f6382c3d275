"""``configs/train.yaml`` composed in-process, as ``train.py`` would see it (for runs started
from Python: :mod:`framework.two_phase` and the tests)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"


def compose_run(overrides: list[str], output_dir: Path | None = None):
    """``configs/train.yaml`` with ``overrides``. With ``output_dir`` the Hydra runtime is set
    up as ``train.py``'s would be, so that ``${hydra:...}`` interpolations and
    ``paths.output_dir`` resolve to that folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=output_dir is not None)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
    return cfg
