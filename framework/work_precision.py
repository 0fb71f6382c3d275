"""Work-precision figure of a sweep: what each job's accuracy cost.

Drawn by :class:`framework.sweep_summary.SweepSummary` at the end of a multirun, next to
``summary.csv``, as ``work_precision.png`` (or afterwards: ``python -m framework.work_precision
<sweep_dir> [--metric NAME]``). Two panels share the y axis, the sweep's headline metric (the
``optimized_metric`` if the jobs logged it, else the first of the summary's preferred test/val
metrics that they did): against the function evaluations per training step (forward +
backward: the solver's work) and against the job's wall time. Each point is a finished job,
labelled by its solver method and tolerance (or step size). The Pareto front of each panel, the
jobs that no other job beats in both cost and metric, is joined by a line: the settings worth
considering; every other job costs more for a worse metric than one of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from framework.outputs import METRICS_FILE
from framework.sweep_summary import PREFERRED, collect_runs

log = logging.getLogger(__name__)

FIGURE_FILE = "work_precision.png"
# headline candidates: the summary's preferred metrics that measure the model, not its cost
QUALITY = tuple(m for m in PREFERRED if m.startswith(("test/", "val/")))
# metrics to maximise (an ELBO is a log-likelihood bound); the front minimises all others
HIGHER_IS_BETTER = ("elbo", "log_px", "acc", "accuracy")
# (name, axis label): the costs of the two panels; "nfe_per_step" is the sum computed below
COSTS = (
    ("nfe_per_step", "function evaluations per training step (forward + backward)"),
    ("wall_time_s", "wall time of the run [s]"),
)


def pareto_front(costs: Sequence[float], metrics: Sequence[float]) -> list[int]:
    """Indices of the points ``(costs[i], metrics[i])`` on the Pareto front of minimising both,
    in increasing cost: point ``i`` is on it if no point ``j`` has ``c_j <= c_i`` and
    ``m_j <= m_i`` with one of them strict. Equal points are all kept; points with a NaN or
    infinite coordinate are never on it."""
    if len(costs) != len(metrics):
        raise ValueError(
            f"costs and metrics must have the same length, got {len(costs)} and {len(metrics)}"
        )
    points = [
        (float(c), float(m), i)
        for i, (c, m) in enumerate(zip(costs, metrics, strict=True))
        if math.isfinite(c) and math.isfinite(m)
    ]
    # sweep in increasing cost (then metric): a point is on the front iff its metric is below
    # that of every cheaper point, or it ties with the front point of the same coordinates
    points.sort()
    front: list[int] = []
    best = math.inf
    last: tuple[float, float] | None = None
    for cost, metric, index in points:
        if metric < best or (cost, metric) == last:
            front.append(index)
            best, last = metric, (cost, metric)
    return front


def higher_is_better(metric: str) -> bool:
    """Whether the front maximises ``metric`` (its last name part ends in
    :data:`HIGHER_IS_BETTER`) rather than minimising it."""
    return metric.rsplit("/", 1)[-1].endswith(HIGHER_IS_BETTER)


def headline_metric(rows: Sequence[dict[str, Any]], optimized: str | None = None) -> str | None:
    """The metric to draw: ``optimized`` if a finished job logged it, else the first of
    :data:`QUALITY` one did; ``None`` if none."""
    logged = {key for row in rows if row.get("status", "ok") == "ok" for key in row}
    if optimized and optimized not in logged:
        log.info(f"optimized_metric {optimized!r} not logged by any finished job; not drawn")
    candidates = ([optimized] if optimized else []) + list(QUALITY)
    return next((m for m in candidates if m in logged), None)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _costs(row: dict[str, Any]) -> dict[str, float]:
    forward = _number(row.get("nfe_forward_per_step"))
    backward = _number(row.get("nfe_backward_per_step"))
    # no backward count (e.g. a model without training gradients through the solver): forward
    nfe = forward + (backward if math.isfinite(backward) else 0.0)
    return {"nfe_per_step": nfe, "wall_time_s": _number(row.get("wall_time_s"))}


def _solver_settings(job_dir: Path) -> dict[str, Any]:
    """The job's solver settings: its saved Hydra config, else its overrides."""
    saved = job_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        # unresolved: a label needs no ${hydra:...} resolver (absent outside the job)
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
        solver = config.get("solver") or {}
        return {k: solver.get(k) for k in ("method", "rtol", "atol", "step_size")}
    record = json.loads((job_dir / METRICS_FILE).read_text())
    settings: dict[str, Any] = {}
    for override in record.get("overrides", []):
        key, _, value = override.lstrip("+~").partition("=")
        if key in ("solver", "solver.method"):
            settings["method"] = value
        elif key.startswith("solver."):
            settings[key.removeprefix("solver.")] = value
    return settings


def solver_label(settings: dict[str, Any]) -> str:
    """``"<method> h=<step>"`` for a fixed grid, else ``"<method> rtol=<r> atol=<a>"``."""

    def short(value: Any) -> str:
        number = _number(value)
        return f"{number:g}" if math.isfinite(number) else str(value)

    parts = [str(settings.get("method") or "?")]
    step = settings.get("step_size")
    if step not in (None, "null"):
        parts.append(f"h={short(step)}")
    else:
        parts += [f"{k}={short(settings[k])}" for k in ("rtol", "atol") if settings.get(k)]
    return " ".join(parts)


def _log_axis(axis_set, values: Sequence[float]) -> None:
    # a log scale when the values span more than a decade (tolerance sweeps do)
    if values and min(values) > 0 and max(values) > 10 * min(values):
        axis_set("log")


def draw_work_precision(
    points: Sequence[dict[str, Any]], metric: str, path: Path, title: str = ""
) -> Path:
    """Draw the figure of the module docstring into ``path``; ``points``: one dict per job with
    ``label``, ``metric`` and the costs of :data:`COSTS`."""
    from models.figures import plt, save_figure

    sign = -1.0 if higher_is_better(metric) else 1.0
    fig, axes = plt.subplots(1, len(COSTS), figsize=(6 * len(COSTS), 4.5), sharey=True)
    for ax, (cost, label) in zip(axes, COSTS, strict=True):
        shown = [p for p in points if math.isfinite(p[cost]) and math.isfinite(p["metric"])]
        if not shown:
            ax.text(0.5, 0.5, f"no {cost} recorded", ha="center", transform=ax.transAxes)
            ax.set_xlabel(label)
            continue
        xs = [p[cost] for p in shown]
        ys = [p["metric"] for p in shown]
        ax.scatter(xs, ys, color="tab:blue", zorder=2, label="job")
        for p, x, y in zip(shown, xs, ys, strict=True):
            ax.annotate(p["label"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        front = pareto_front(xs, [sign * y for y in ys])
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            color="tab:red",
            marker="o",
            markerfacecolor="none",
            markersize=11,
            zorder=1,
            label="Pareto front",
        )
        _log_axis(ax.set_xscale, xs)
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ys = [p["metric"] for p in points if math.isfinite(p["metric"])]
    _log_axis(axes[0].set_yscale, ys)
    for ax in axes:
        # plain tick labels, not "1e-5 + 0.543" offsets: close metrics are the common case
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "linear":
                axis.get_major_formatter().set_useOffset(False)
    better = "higher" if sign < 0 else "lower"
    axes[0].set_ylabel(f"{metric} ({better} is better)")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def write_work_precision(sweep_dir: str | Path, metric: str | None = None) -> Path | None:
    """``<sweep_dir>/work_precision.png`` from the jobs' ``metrics.json`` files (failed jobs
    left out); ``metric``: the y axis, else :func:`headline_metric`. ``None`` (with the reason
    logged) if fewer than two finished jobs have the metric: nothing to compare."""
    sweep_dir = Path(sweep_dir)
    rows, _ = collect_runs(sweep_dir)
    finished = [row for row in rows if row.get("status", "ok") == "ok"]
    name = headline_metric(finished, metric)
    if name is None:
        log.info(f"No work-precision figure: no job under {sweep_dir} logged a metric to draw")
        return None
    points = []
    for row in finished:
        value = _number(row.get(name))
        if not math.isfinite(value):
            continue
        label = solver_label(_solver_settings(sweep_dir / row["job"]))
        points.append({"label": f"{row['job']}: {label}", "metric": value, **_costs(row)})
    if len(points) < 2:
        log.info(
            f"No work-precision figure: {len(points)} finished job(s) of {len(rows)} under "
            f"{sweep_dir} logged {name}; it compares two or more"
        )
        return None
    title = f"{sweep_dir.name}: {name} of {len(points)} jobs"
    return draw_work_precision(points, name, sweep_dir / FIGURE_FILE, title)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the work-precision figure of a sweep.")
    parser.add_argument("sweep_dir", help="the multirun folder (holding one folder per job)")
    parser.add_argument("--metric", default=None, help="y axis (default: the headline metric)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_work_precision(args.sweep_dir, args.metric)
    if path is not None:
        print(path)


if __name__ == "__main__":
    main()
