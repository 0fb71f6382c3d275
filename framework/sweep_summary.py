"""Summary table of a Hydra multirun (a Hydra callback registered in configs/hydra/default.yaml).

Each run of a sweep writes ``metrics.json`` into its own folder (:mod:`framework.run`); a run that
raised gets a ``failure.json`` from :meth:`SweepSummary.on_job_end`. After every run, and at the
end of the sweep, the callback collects these files and writes ``summary.csv`` and ``summary.md``
at the sweep's root: one row per run with the overrides that set it apart (those shared by all
runs are listed once above the Markdown table), its status, final metrics, function evaluations
per training step and wall time. The CSV holds every metric, the Markdown table the headline
ones. Rewriting after each run keeps the table of the finished runs even if a later run aborts
the sweep. At the end of the sweep it also draws ``work_precision.png``
(:mod:`framework.work_precision`): each run's headline metric against its cost.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from framework.outputs import METRICS_FILE, write_text_atomic

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
PREFERRED = (
    "test/extrap_rmse",
    "test/interp_mse",
    "test/elbo",
    "val/loss",
    "val/extrap_rmse",
    "nfe_forward_per_step",
    "nfe_backward_per_step",
    "steps_forward_per_step",
    "steps_backward_per_step",
    "train_steps",
    "wall_time_s",
)


def _job_key(path: Path) -> tuple:
    name = path.parent.relative_to(path.parents[1]).as_posix()
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def collect_runs(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run folder under ``sweep_dir`` holding a metrics or failure file, and the
    overrides shared by all of them (left out of the rows)."""
    rows = []
    files = list(sweep_dir.glob(f"*/{METRICS_FILE}")) + list(sweep_dir.glob(f"*/{FAILURE_FILE}"))
    records = [(path, json.loads(path.read_text())) for path in sorted(files, key=_job_key)]
    common = shared_overrides([r.get("overrides", []) for _, r in records])
    for path, record in records:
        row: dict[str, Any] = {
            "job": path.parent.name,
            "overrides": " ".join(o for o in record.get("overrides", []) if o not in common),
            "status": record.get("status", "ok"),
        }
        if "error" in record:
            row["error"] = record["error"]
        row.update(record.get("metrics", {}))
        rows.append(row)
    return rows, common


def shared_overrides(overrides: list[list[str]]) -> list[str]:
    """Overrides given to every run (of several): the sweep's fixed settings."""
    if len(overrides) < 2:
        return []
    first, *rest = overrides
    return [o for o in first if all(o in other for other in rest)]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    present = {key for row in rows for key in row}
    head = ["job", "overrides", "status"]
    # best/<monitor>: the validation score that chose each run's tested checkpoint, the one to
    # pick a run of a seed sweep by
    best = sorted(k for k in present if k.startswith("best/"))
    metrics = best + [k for k in PREFERRED if k in present]
    rest = sorted(present - set(head) - set(metrics) - {"error"})
    tail = ["error"] if "error" in present else []
    return head + metrics + rest + tail


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_summary(sweep_dir: Path, stem: str = "summary") -> tuple[Path, Path] | None:
    """Write ``<stem>.csv`` and ``<stem>.md`` in ``sweep_dir``; ``None`` if no run finished."""
    rows, common = collect_runs(sweep_dir)
    if not rows:
        return None
    columns = _columns(rows)
    csv_path = sweep_dir / f"{stem}.csv"
    # atomic writes: the jobs of a parallel sweep rewrite these files as they finish
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, buffer.getvalue())
    md_lines = [f"Settings of every run: `{' '.join(common)}`", ""] if common else []
    # the Markdown table keeps the headline columns; the CSV has every metric
    headline = ("job", "overrides", "status", "error", *PREFERRED)
    md_columns = [c for c in columns if c in headline or c.startswith("best/")]
    md_lines += [
        "| " + " | ".join(md_columns) + " |",
        "|" + "|".join("---" for _ in md_columns) + "|",
    ]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|") for c in md_columns]
        md_lines.append("| " + " | ".join(cells) + " |")
    md_path = sweep_dir / f"{stem}.md"
    write_text_atomic(md_path, "\n".join(md_lines) + "\n")
    return csv_path, md_path


class SweepSummary(Callback):
    """Hydra callback writing the sweep summary (module docstring)."""

    def __init__(self, stem: str = "summary", work_precision: bool = True) -> None:
        self.stem = stem
        self.work_precision = work_precision

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.get("hydra") if config is not None else None
        if hydra_cfg is None or hydra_cfg.get("mode") != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED:
            output_dir = Path(hydra_cfg.runtime.output_dir)
            record = {
                "status": "failed",
                "overrides": list(job_return.overrides or []),
                "error": f"{type(job_return._return_value).__name__}: {job_return._return_value}",
            }
            write_text_atomic(output_dir / FAILURE_FILE, json.dumps(record, indent=2))
        write_summary(Path(hydra_cfg.sweep.dir), self.stem)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        written = write_summary(sweep_dir, self.stem)
        if written is None:
            log.warning(f"No finished run found under {sweep_dir}; no summary written")
            return
        log.info(f"Sweep summary: {written[0]} and {written[1]}")
        if self.work_precision:
            # drawn once, here: it needs every run (a figure per finished run would cost each
            # run of a parallel sweep a matplotlib import and drawing). A sweep that Hydra's
            # basic sweeper aborts (it re-raises a failed run's error) never gets here: draw
            # its figure with `python -m framework.work_precision <sweep_dir>`.
            from framework.work_precision import write_work_precision

            figure = write_work_precision(sweep_dir, config.get("optimized_metric"))
            if figure is not None:
                log.info(f"Work-precision figure: {figure}")
