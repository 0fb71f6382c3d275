"""Figures of the latent ODE (matplotlib, Agg backend, written to PNG files).

* :func:`plot_reconstructions`: per example, the observed points, the noiseless series, the
  reconstruction over the observation window and the extrapolation beyond it. 2-D series are
  drawn in the plane, others as value against time.
* :func:`plot_latents`: the latent trajectories ``z(t)`` of each example against time.
* :func:`plot_prior_samples`: series decoded from ``z0 ~ N(0, I)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from models.figures import plt, save_figure


def _grid(n: int, width: float = 3.2, height: float = 3.0):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_reconstructions(
    batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor], path: Path
) -> Path:
    """Observed points, truth, reconstruction (solid) and extrapolation (dashed) per example."""
    values, mask = batch["values"], batch["mask"]
    n_obs = batch["t_obs"].shape[0]
    truth = torch.cat([batch["truth"], batch["extrap"]], dim=1)
    t, x = pred["t"], pred["x"]
    fig, axes = _grid(values.shape[0])
    for i, ax in enumerate(axes):
        if i >= values.shape[0]:
            break
        seen = mask[i].amax(dim=-1) > 0
        if values.shape[-1] == 2:
            ax.plot(truth[i, :, 0], truth[i, :, 1], color="0.75", lw=1, label="truth")
            ax.scatter(values[i, seen, 0], values[i, seen, 1], s=6, c="k", label="observed")
            ax.plot(x[i, :n_obs, 0], x[i, :n_obs, 1], c="C0", label="reconstruction")
            ax.plot(x[i, n_obs - 1 :, 0], x[i, n_obs - 1 :, 1], "--", c="C3", label="extrapolation")
            ax.set_aspect("equal", adjustable="datalim")
        else:
            for d in range(values.shape[-1]):
                obs = mask[i, :, d] > 0
                ax.plot(t, truth[i, :, d], color="0.75", lw=1, label="truth" if d == 0 else None)
                ax.scatter(
                    batch["t_obs"][obs],
                    values[i, obs, d],
                    s=6,
                    c="k",
                    label="observed" if d == 0 else None,
                )
                ax.plot(
                    t[:n_obs], x[i, :n_obs, d], c="C0", label="reconstruction" if d == 0 else None
                )
                ax.plot(
                    t[n_obs - 1 :],
                    x[i, n_obs - 1 :, d],
                    "--",
                    c="C3",
                    label="extrapolation" if d == 0 else None,
                )
            ax.axvline(float(t[n_obs - 1]), color="0.5", lw=0.5)
            ax.set_xlabel("t")
        ax.set_title(f"example {i}")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_latents(
    batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor], path: Path
) -> Path:
    """Each latent coordinate of each example against time; the line marks the window's end."""
    t, z = pred["t"], pred["z"]
    n_obs = batch["t_obs"].shape[0]
    fig, axes = _grid(z.shape[0])
    for i, ax in enumerate(axes):
        if i >= z.shape[0]:
            break
        for j in range(z.shape[-1]):
            ax.plot(t, z[i, :, j], lw=1, label=f"z{j}")
        ax.axvline(float(t[n_obs - 1]), color="0.5", lw=0.5)
        ax.set_xlabel("t")
        ax.set_title(f"latent path, example {i}")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_prior_samples(samples: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Series decoded from prior draws: in the plane for 2-D data, else against time."""
    t, x = samples["t"], samples["x"]
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    for i in range(x.shape[0]):
        if x.shape[-1] == 2:
            ax.plot(x[i, :, 0], x[i, :, 1], lw=1)
            ax.plot(x[i, :1, 0], x[i, :1, 1], "o", ms=3, c="k")
        else:
            ax.plot(t, x[i, :, 0], lw=1)
    if x.shape[-1] == 2:
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.set_xlabel("t")
    ax.set_title(f"{x.shape[0]} samples from the prior")
    return save_figure(fig, path)
