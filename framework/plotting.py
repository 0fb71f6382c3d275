"""Writing a trained model's figures from a checkpoint (used by ``plot.py``, ``train.py`` and the
notebook)."""

from __future__ import annotations

from pathlib import Path

from framework.checkpoint import load_datamodule, load_model


def default_plot_dir(ckpt_path: str | Path) -> Path:
    """``<run>/plots`` for ``<run>/checkpoints/x.ckpt``, else a ``plots`` folder beside the file."""
    ckpt_path = Path(ckpt_path)
    parent = ckpt_path.parent
    if parent.name == "checkpoints":
        parent = parent.parent
    return parent / "plots"


def plot_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path | None = None,
    n_examples: int = 4,
    split: str = "test",
    seed: int = 0,
) -> list[Path]:
    """Load the model and data of ``ckpt_path`` and write the model's plots for ``n_examples``
    series of ``split``; returns the image paths."""
    model = load_model(ckpt_path)
    datamodule = load_datamodule(ckpt_path)
    batch = datamodule.example_batch(split, n_examples)
    out = Path(out_dir) if out_dir is not None else default_plot_dir(ckpt_path)
    return model.write_plots(batch, out, seed=seed)
