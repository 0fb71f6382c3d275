"""Rebuilding a model and its data module from a checkpoint file alone.

:class:`models.base.ODEModule` stores the import paths of both classes in the checkpoint;
Lightning stores their constructor arguments (``save_hyperparameters``). Nothing else is needed:
no config, no knowledge of which model the file holds. Saved arguments can be replaced: the data
module's (data on another machine) and the model's solver settings (evaluating a model with
another method or tolerance than it was trained with).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import node
from models.base import CHECKPOINT_KEY


def _load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path must be an existing checkpoint file, got '{path}'")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            f"'{path}' was not written by this framework (no '{CHECKPOINT_KEY}' entry naming "
            "the model class); load it with YourModel.load_from_checkpoint instead"
        )
    return checkpoint


def _read(path: str | Path) -> dict[str, Any]:
    return _load(path)[CHECKPOINT_KEY]


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"cannot import class '{path}' named in the checkpoint: {err}") from err


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               solver: Mapping[str, Any] | None = None):
    """The model saved in ``path``, in eval mode. ``solver``: fields of the model's
    :class:`node.SolverConfig` to replace (e.g. ``{"method": "rk4", "step_size": 0.05}``): the
    model is built with the saved solver settings updated by these, and the saved weights."""
    checkpoint = _load(path)
    cls = import_class(checkpoint[CHECKPOINT_KEY]["model_class"])
    replaced = {}
    if solver:
        replaced["solver"] = solver_with(checkpoint.get("hyper_parameters", {}), solver, cls)
    model = cls.load_from_checkpoint(path, map_location=map_location, **replaced)
    return model.eval()


def solver_with(hparams: Mapping[str, Any], changes: Mapping[str, Any], cls: type
                ) -> dict[str, Any]:
    """The solver fields saved in a model's ``hparams`` with ``changes`` applied, checked by
    building the :class:`node.SolverConfig` (a field name it lacks, or a combination it rejects,
    raises naming it)."""
    if "solver" not in hparams:
        raise ValueError(f"solver: the checkpoint's model {cls.__name__} saved no solver settings "
                         "(it takes no `solver` argument), so there are none to replace")
    known = [f.name for f in dataclasses.fields(node.SolverConfig)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ValueError(f"solver: unknown field(s) {unknown}; node.SolverConfig has "
                         f"{', '.join(known)}")
    fields = {**(hparams["solver"] or {}), **changes}
    try:
        node.SolverConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"solver: the saved settings with {dict(changes)} are not a valid "
                         f"solver configuration: {err}") from err
    return fields


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
