"""Evaluate a checkpoint on the test split: ``python eval.py ckpt_path=<file> [key=value ...]``.

Examples::

    python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python eval.py ckpt_path=<file> trainer=gpu plots.enabled=false
    python eval.py ckpt_path=<file> +datamodule.data_dir=/mnt/datasets/mnist
    python eval.py ckpt_path=<file> +solver.method=rk4 +solver.step_size=0.05

The model and its data module are rebuilt from the checkpoint alone; metrics.json, plots/ and the
metrics log go to logs/eval/runs/<timestamp>/. The configuration is ``configs/eval.yaml``; the
pipeline :func:`framework.evaluate.evaluate`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from framework.evaluate import checkpoint_path, evaluate
    from framework.extras import apply_extras

    checkpoint_path(cfg)  # a missing checkpoint fails before anything else happens
    apply_extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
