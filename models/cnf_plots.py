"""Figures of the continuous normalizing flow (matplotlib, Agg backend, written to PNG files).

* :func:`plot_density`: a 2-D histogram of the data next to the learned density
  :math:`p_\\theta` on a grid.
* :func:`plot_samples`: data points next to samples of the model (base draws solved backwards).
* :func:`plot_flow`: a regular grid of base-space points carried by the flow to data space,
  shown at several times (the grid lines deform into the shape of the data).
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.figures import plt, save_figure

Bounds = tuple[float, float, float, float]
MAX_FLOW_PANELS = 6


def _frame(ax, bounds: Bounds, title: str) -> None:
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def plot_density(
    data: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    log_p: torch.Tensor,
    bounds: Bounds,
    path: Path,
) -> Path:
    """Histogram of ``data`` beside ``exp(log_p)`` (``log_p[i, j]`` at ``(xs[j], ys[i])``)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 4.2))
    left.hist2d(
        data[:, 0].numpy(),
        data[:, 1].numpy(),
        bins=80,
        range=[bounds[:2], bounds[2:]],
        cmap="viridis",
    )
    _frame(left, bounds, f"data ({len(data)} points)")
    density = log_p.exp().numpy()
    right.pcolormesh(xs.numpy(), ys.numpy(), density, cmap="viridis", shading="auto")
    _frame(right, bounds, "learned density")
    return save_figure(fig, path)


def plot_samples(data: torch.Tensor, samples: torch.Tensor, bounds: Bounds, path: Path) -> Path:
    """``data`` beside ``samples`` of the model, as scatter plots."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 4.2))
    left.scatter(data[:, 0], data[:, 1], s=1, c="k", alpha=0.5)
    _frame(left, bounds, "data")
    right.scatter(samples[:, 0], samples[:, 1], s=1, c="C3", alpha=0.5)
    _frame(right, bounds, f"{len(samples)} model samples")
    return save_figure(fig, path)


def plot_flow(
    trajectory: torch.Tensor,
    grid_shape: tuple[int, int],
    end_times: list[float],
    bounds: Bounds,
    path: Path,
) -> Path:
    """The grid ``trajectory[0]`` (base space, ``[rows * cols, 2]`` in row-major order) at
    successive positions ``trajectory[k]`` along the flow towards data space; grid lines join
    neighbouring points. ``end_times``: each block's :math:`T` (for the panel titles)."""
    n_snap = trajectory.shape[0]
    picks = sorted(
        {round(i * (n_snap - 1) / (MAX_FLOW_PANELS - 1)) for i in range(MAX_FLOW_PANELS)}
        if n_snap > MAX_FLOW_PANELS
        else range(n_snap)
    )
    rows, cols = grid_shape
    fig, axes = plt.subplots(1, len(picks), figsize=(2.8 * len(picks), 3.0), squeeze=False)
    for ax, k in zip(axes[0], picks, strict=True):
        pts = trajectory[k].reshape(rows, cols, 2)
        colour = torch.linspace(0, 1, rows)
        for i in range(rows):
            ax.plot(pts[i, :, 0], pts[i, :, 1], lw=0.6, color=plt.cm.viridis(float(colour[i])))
        for j in range(cols):
            ax.plot(pts[:, j, 0], pts[:, j, 1], lw=0.6, color="0.6")
        title = f"snapshot {k} of {n_snap - 1}"
        title = "base (t = T)" if k == 0 else ("data (t = 0)" if k == n_snap - 1 else title)
        _frame(ax, bounds, title)
    total = sum(end_times)
    fig.suptitle(
        f"grid carried from base to data space ({len(end_times)} block(s), total T = {total:.3g})",
        fontsize=9,
    )
    return save_figure(fig, path)
