"""Write a trained model's figures from a checkpoint: ``python plot.py ckpt_path=<file>``.

The model and its data module are rebuilt from the checkpoint alone; the images go to
``out_dir`` (default: the ``plots/`` folder of the run that wrote the checkpoint). Options are in
``configs/plot.yaml`` (``n_examples``, ``split``, ``seed``).
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="configs", config_name="plot")
def main(cfg: DictConfig) -> None:
    from framework.plotting import plot_checkpoint

    paths = plot_checkpoint(
        cfg.ckpt_path, cfg.out_dir, n_examples=cfg.n_examples, split=cfg.split, seed=cfg.seed
    )
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
