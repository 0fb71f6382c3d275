"""Train a model: ``python train.py [group=option ...] [key=value ...]``.

Examples::

    python train.py                                   # latent ODE on spirals, dopri5, CPU
    python train.py solver=rk4 solver.step_size=0.05 solver.gradient=adjoint
    python train.py experiment=spirals_chen2018 datamodule.n_obs=30
    python train.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt   # resume
    python train.py train=false ckpt_path=<file>     # test <file> in the model of the config
    python train.py -m solver=dopri5,tsit5,rk4 solver.rtol=1e-3,1e-5        # sweep + summary
    python train.py -m hparams_search=latent_ode_optuna                      # Optuna search
    python train.py trainer=ddp_sim                  # DDP, 2 CPU processes; trainer=ddp: GPUs

The configuration lives in ``configs/`` (entry: ``configs/train.yaml``); the pipeline in
:func:`framework.run.train`. The ``extras`` group (printing the config, ...) is applied first.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | list[float] | None:
    """The run's ``optimized_metric`` for a sweeper: one value, or a list of values for a list
    of metrics (a multi-objective search, e.g. ``[val/loss, nfe_forward_per_step]``)."""
    from framework.extras import apply_extras
    from framework.run import train

    apply_extras(cfg)
    result = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric is None or result["status"] != "ok":  # "failed": a DDP rank > 0 (framework.run)
        return None
    names = [metric] if isinstance(metric, str) else [str(m) for m in metric]
    missing = [name for name in names if name not in result["metrics"]]
    if missing:
        raise KeyError(
            f"optimized_metric {missing} not logged; available: {sorted(result['metrics'])}"
        )
    values = [result["metrics"][name] for name in names]
    return values[0] if isinstance(metric, str) else values


if __name__ == "__main__":
    main()
