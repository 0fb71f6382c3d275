"""Starting a model from another run's weights, and training only some of its parts.

A two-phase recipe trains a whole model, then a part of it afresh with the rest frozen (for the
latent ODE: a new encoder for a trained flow and decoder, see ``LatentODEModule``'s
``init_from``). The weights come from a Lightning checkpoint of a model of the same class; a
*part* is a top-level submodule (``encoder``, ``dynamics``, ...), and the parameters and
buffers under the chosen parts are copied by name. A name the checkpoint lacks, or a shape that
differs, is an error naming them: it means a different architecture, which a silent partial
load would hide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def check_parts(name: str, parts: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """``parts`` as a tuple, each one of ``known`` (else a ``ValueError`` naming ``name``)."""
    if isinstance(parts, str) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"model.{name} must be a list of part names from {list(known)}, "
                         f"got {parts!r}")
    unknown = [p for p in parts if p not in known]
    if unknown or not parts:
        raise ValueError(f"model.{name} must name parts from {list(known)}, got {list(parts)}")
    return tuple(parts)


def load_parts(module: torch.nn.Module, path: str | Path, parts: Sequence[str]) -> list[str]:
    """Copy the weights of ``parts`` from the checkpoint at ``path`` into ``module``; returns the
    names copied. Raises ``FileNotFoundError`` or ``ValueError`` naming what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from must be an existing checkpoint file, got "
                                f"'{path}'")
    saved = torch.load(path, map_location="cpu", weights_only=True).get("state_dict")
    if saved is None:
        raise ValueError(f"model.init_from: '{path}' holds no state_dict (not a Lightning "
                         "checkpoint)")
    own = {k: v for k, v in module.state_dict().items() if k.split(".")[0] in parts}
    missing = sorted(k for k in own if k not in saved)
    missing += sorted(f"{k} (in the checkpoint only)" for k in saved
                      if k.split(".")[0] in parts and k not in own)
    mismatched = sorted(f"{k} {tuple(saved[k].shape)} -> {tuple(v.shape)}"
                        for k, v in own.items() if k in saved and saved[k].shape != v.shape)
    if missing or mismatched:
        raise ValueError(
            f"model.init_from: '{path}' does not fit this model's parts {list(parts)}: "
            + "; ".join(filter(None, [
                f"names differ {missing[:5]}" + (" ..." if len(missing) > 5 else "") if missing
                else "", f"shapes differ {mismatched[:5]}" if mismatched else ""]))
            + " (a checkpoint of another architecture?)")
    module.load_state_dict({k: saved[k] for k in own}, strict=False)
    return sorted(own)


def freeze_except(module: torch.nn.Module, parts: Sequence[str]) -> int:
    """Stop the gradients of every parameter outside ``parts``; returns how many stay
    trainable."""
    trainable = 0
    for name, p in module.named_parameters():
        keep = name.split(".")[0] in parts
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    return trainable
