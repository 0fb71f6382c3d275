r"""Figures of the ODE-Net classifier (matplotlib, Agg backend, written to PNG files).

* :func:`plot_trajectories`: the ODE states :math:`h(t)` of a few inputs at several times in
  :math:`[0, T]`, flattened and projected on the first two principal components of all of them
  (the paths the block moves the features along, coloured by class), next to the distance
  :math:`\lVert h(t) - h(0)\rVert / \lVert h(0)\rVert` against time.
* :func:`plot_nfe`: function evaluations of the forward pass and of ``backward()`` per training
  step, read from the run's CSV metrics log (and validation accuracy, when logged).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from models.figures import plt, save_figure


def pca_2d(points: torch.Tensor) -> torch.Tensor:
    """Coordinates of ``points`` (``[N, D]``) on their first two principal axes: ``[N, 2]``
    (a zero second column when the points span a single direction)."""
    centered = points - points.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    coords = centered @ vh[:2].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 2 - coords.shape[1])], 1)
    return coords


def plot_trajectories(
    times: torch.Tensor,
    states: torch.Tensor,
    labels: torch.Tensor,
    pred: torch.Tensor,
    path: Path,
) -> Path:
    """``states``: ``[T, B, ...]`` ODE states at ``times`` (``[T]``) of ``B`` inputs with true
    ``labels`` and predicted classes ``pred`` (``[B]``)."""
    n_times, batch = states.shape[:2]
    flat = states.reshape(n_times, batch, -1).double()
    coords = pca_2d(flat.reshape(n_times * batch, -1)).reshape(n_times, batch, 2)
    start_norm = flat[0].norm(dim=-1).clamp_min(1e-12)
    moved = (flat - flat[:1]).norm(dim=-1) / start_norm
    colors = plt.get_cmap("tab10")
    fig, (ax, ax_dist) = plt.subplots(1, 2, figsize=(10, 4.5))
    for i in range(batch):
        c = colors(int(labels[i]) % 10)
        ax.plot(coords[:, i, 0], coords[:, i, 1], lw=1, color=c)
        ax.plot(coords[0, i, 0], coords[0, i, 1], "o", ms=4, color=c)
        ax.plot(coords[-1, i, 0], coords[-1, i, 1], "*", ms=9, color=c)
        wrong = "" if int(pred[i]) == int(labels[i]) else f"->{int(pred[i])}"
        ax.annotate(f"{int(labels[i])}{wrong}", coords[-1, i].tolist(), fontsize=7)
        ax_dist.plot(times, moved[:, i], lw=1, color=c)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(
        f"ODE states of {batch} inputs, PCA (o: t=0, *: t=T; 'a->b': a predicted as b)",
        fontsize=9,
    )
    ax_dist.set_xlabel("t")
    ax_dist.set_ylabel("|h(t) - h(0)| / |h(0)|")
    ax_dist.set_title("relative distance travelled", fontsize=9)
    return save_figure(fig, path)


def find_metrics_csv(recorded: str | None, out_dir: Path) -> Path | None:
    """``recorded`` if that file exists, else the newest ``csv/version_*/metrics.csv`` of the run
    folder above ``out_dir`` (``<run>/plots`` -> ``<run>``), else ``None``."""
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    candidates = sorted(Path(out_dir).parent.glob("csv/version_*/metrics.csv"))
    candidates = [p for p in candidates if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def read_series(path: str | Path, column: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the rows of a Lightning CSV log where ``column`` has a value."""
    steps, values = [], []
    with Path(path).open() as handle:
        for row in csv.DictReader(handle):
            value = row.get(column)
            if value not in (None, ""):
                steps.append(float(row["step"]))
                values.append(float(value))
    return steps, values


def plot_nfe(metrics_csv: str | Path, path: Path) -> Path:
    """Forward and backward function evaluations per training step against the step, and the
    validation accuracy against the step where it was logged."""
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for column, label in (("nfe/forward", "forward"), ("nfe/backward", "backward")):
        steps, values = read_series(metrics_csv, column)
        if steps:
            ax.plot(steps, values, lw=1, marker=".", ms=3, label=label)
            drawn = True
    ax.set_xlabel("training step")
    ax.set_ylabel("function evaluations per step")
    if drawn:
        ax.set_title("evaluations over training")
        ax.legend(fontsize=8)
    else:
        ax.set_title("no training step logged (see trainer.log_every_n_steps)", fontsize=9)
    steps, values = read_series(metrics_csv, "val/acc")
    if steps:
        ax_acc.plot(steps, values, marker="o", ms=3)
    ax_acc.set_xlabel("training step")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("validation accuracy" if steps else "validation accuracy (not logged)")
    return save_figure(fig, path)
