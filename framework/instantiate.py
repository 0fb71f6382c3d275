"""Building callbacks and loggers from their config groups (lightning-hydra-template style).

``callbacks`` and ``logger`` are dicts of named entries, each with a ``_target_``; ``null`` or an
empty dict means none.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig


def _instantiate_group(cfg: DictConfig | None, group: str) -> list[Any]:
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {group} config must be a dict of named entries, got {cfg!r}")
    objects = []
    for name, entry in cfg.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(
                f"{group}.{name} must be a config with a _target_ (the class to build), "
                f"got {entry!r}"
            )
        objects.append(hydra.utils.instantiate(entry, _convert_="all"))
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Any]:
    return _instantiate_group(cfg, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Any]:
    return _instantiate_group(cfg, "logger")
