"""Figures of the stiff-kinetics model: fitted trajectories against the data, one panel per
species, on a logarithmic time axis (the data's grid)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from models.figures import plt, save_figure


def plot_species(batch: Mapping[str, torch.Tensor], pred: torch.Tensor, path: Path) -> Path:
    """Data (dots) and model (lines) of each trajectory of ``batch`` for every species; ``pred``
    is ``[B, T, D]`` on the batch's times (``t[0] = 0`` is left out of the log axis)."""
    t, y = batch["t"][1:], batch["y"][:, 1:]
    pred = pred[:, 1:]
    n_species = y.shape[-1]
    fig, axes = plt.subplots(1, n_species, figsize=(4.0 * n_species, 3.4), squeeze=False)
    for d, ax in enumerate(axes[0]):
        for b in range(y.shape[0]):
            color = f"C{b % 10}"
            ax.plot(t, y[b, :, d], "o", ms=3, color=color, alpha=0.6,
                    label="data" if b == 0 else None)
            ax.plot(t, pred[b, :, d], "-", color=color, label="model" if b == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_title(f"y{d + 1}")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes[0][0].legend(loc="best", fontsize=8)
    return save_figure(fig, path)
