"""Plots from a checkpoint: plot.py on the command line and the notebook (executed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLOTS = {"reconstructions.png", "latents.png", "prior_samples.png"}


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_writes_the_plots(trained_run):
    written = [Path(p) for p in trained_run["paths"]["plots"]]
    assert {p.name for p in written} == PLOTS
    assert all(is_png(p) for p in written)


@pytest.mark.slow
def test_plot_script_writes_images_from_a_checkpoint(trained_run, tmp_path):
    ckpt = trained_run["paths"]["last_checkpoint"]
    out = tmp_path / "figures"
    proc = subprocess.run(
        [sys.executable, "plot.py", f"ckpt_path={ckpt}", f"out_dir={out}", "n_examples=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == PLOTS
    assert all(is_png(p) for p in out.iterdir())
    assert f"wrote {out / 'reconstructions.png'}" in proc.stdout


def test_missing_checkpoint_is_named(tmp_path):
    from framework.plotting import plot_checkpoint

    missing = tmp_path / "missing.ckpt"
    with pytest.raises(
        FileNotFoundError, match=f"ckpt_path must be an existing checkpoint file, got '{missing}'"
    ):
        plot_checkpoint(missing)


@pytest.mark.slow
def test_notebook_runs(trained_run, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("NODE_CKPT_PATH", trained_run["paths"]["last_checkpoint"])
    monkeypatch.setenv("NODE_PLOT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "notebooks" / "inspect_checkpoint.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    client.execute()
    assert {p.name for p in tmp_path.iterdir()} == PLOTS
    text = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "extrapolation RMSE" in text
    images = [
        out
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 3
    assert os.environ["NODE_CKPT_PATH"] in text
