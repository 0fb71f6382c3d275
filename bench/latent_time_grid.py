"""The latent ODE's time grids (issue 17): CPU time and NFE of a training step, union vs
per-sample, on the periodic data of ``experiment=periodic_rubanova2019``.

Variants (the same weights, batches and noise draws): ``union`` (``time_grid=union``),
``per_sample`` (``time_grid=per_sample``: decoder and ODE-RNN encoder per sample), and, to
see where the difference comes from, ``decoder_only`` and ``encoder_only`` (one of the two per
sample). A step is the loss's forward pass and ``backward()`` (IWAE, 3 samples, dopri5 at
rtol 1e-3, atol 1e-4, batch 50); times are process CPU times, summed over 8 batches and 3
rounds (the variants interleaved). Optionally from a checkpoint's weights (a trained model
takes more steps than a fresh one):

    OMP_NUM_THREADS=1 python -m bench.latent_time_grid [path/to/checkpoint.ckpt]
"""

from __future__ import annotations

import itertools
import sys
import time

import torch

import node
from datamodules.periodic import PeriodicDataModule
from models import LatentODEModule

HPARAMS = dict(obs_dim=1, encoder="odernn", latent_dim=6, encoder_hidden=20,
               dynamics_hidden=32, decoder_hidden=32, obs_std=0.01, n_samples=3,
               objective="iwae", lr=0.005)
# name: (encoder per sample, decoder's time grid)
VARIANTS = {"union": (False, "union"), "per_sample": (True, "per_sample"),
            "decoder_only": (False, "per_sample"), "encoder_only": (True, "union")}


def main(checkpoint: str | None = None, n_batches: int = 8, rounds: int = 3) -> None:
    torch.set_num_threads(1)
    data = PeriodicDataModule(n_series=1000, n_points=100, t_max=5.0, noise_std=0.01,
                              observed_fraction=0.5, n_extrap=50, batch_size=50)
    data.setup("fit")
    batches = list(itertools.islice(data.train_dataloader(), n_batches))
    torch.manual_seed(0)
    solver = node.SolverConfig(method="dopri5")
    base = LatentODEModule(**HPARAMS, solver=solver)
    if checkpoint:
        base.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    totals = {name: [0.0, 0, 0] for name in VARIANTS}  # cpu seconds, nfe, steps
    for _ in range(rounds):
        for name, (encoder_per_sample, time_grid) in VARIANTS.items():
            model = LatentODEModule(**HPARAMS, solver=solver, time_grid=time_grid)
            model.load_state_dict(base.state_dict())
            model.encoder.per_sample = encoder_per_sample
            for batch in batches:
                torch.manual_seed(1)
                before = model.evaluation_counts()
                start = time.process_time()
                loss, _ = model.loss_terms(batch, beta=1.0)
                loss.backward()
                totals[name][0] += time.process_time() - start
                totals[name][1] += (model.evaluation_counts() - before).nfe
                totals[name][2] += 1
    for name, (seconds, nfe, steps) in totals.items():
        print(f"{name:13s} CPU per step {1000 * seconds / steps:7.1f} ms   "
              f"NFE per step {nfe / steps:7.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
