"""Rebuilding a model and its data module from a checkpoint file alone.

:class:`models.base.ODEModule` stores the import paths of both classes in the checkpoint;
Lightning stores their constructor arguments (``save_hyperparameters``). Nothing else is needed:
no config, no knowledge of which model the file holds.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from models.base import CHECKPOINT_KEY


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path must be an existing checkpoint file, got '{path}'")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            f"'{path}' was not written by this framework (no '{CHECKPOINT_KEY}' entry naming "
            "the model class); load it with YourModel.load_from_checkpoint instead"
        )
    return checkpoint[CHECKPOINT_KEY]


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"cannot import class '{path}' named in the checkpoint: {err}") from err


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """The model saved in ``path``, in eval mode."""
    cls = import_class(_read(path)["model_class"])
    model = cls.load_from_checkpoint(path, map_location=map_location)
    return model.eval()


def load_datamodule(path: str | Path, **overrides: Any):
    """The data module the model in ``path`` was trained on (set up, ready to use); keyword
    ``overrides`` replace its saved constructor arguments (e.g. ``data_dir`` on another machine)."""
    info = _read(path)
    if "datamodule_class" not in info:
        raise ValueError(
            f"'{path}' does not record a data module (the model was trained without one)"
        )
    datamodule = import_class(info["datamodule_class"]).load_from_checkpoint(path, **overrides)
    datamodule.setup()
    return datamodule
