"""Conveniences applied at the start of ``train.py`` and ``eval.py``: the ``extras`` config
group (``configs/extras/default.yaml``).

* ``ignore_warnings``: silence Python warnings for the run;
* ``enforce_tags``: a run without ``tags`` is an error (tags name runs in loggers and sweeps);
* ``print_config``: print the composed configuration, resolved, one section per top-level key
  (a tree with syntax highlighting if ``rich`` is installed, else plain YAML).
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# printed first, in this order; the other top-level keys follow in the config's own order
FIRST_KEYS = ("datamodule", "model", "solver", "callbacks", "logger", "trainer", "paths", "extras")


def apply_extras(cfg: DictConfig) -> None:
    """Apply ``cfg.extras`` (nothing if absent or null)."""
    extras = cfg.get("extras")
    if not extras:
        return
    if extras.get("ignore_warnings"):
        log.info("Ignoring Python warnings (extras.ignore_warnings=true)")
        warnings.filterwarnings("ignore")
    if extras.get("enforce_tags") and not cfg.get("tags"):
        raise ValueError(
            "tags must name this run when extras.enforce_tags=true, got "
            f"{cfg.get('tags')!r}; pass e.g. tags=[dev] or extras.enforce_tags=false"
        )
    # once per run: under DDP, Lightning's ranks 1.. re-run train.py (LOCAL_RANK etc. are set)
    if extras.get("print_config") and rank_zero_only.rank == 0:
        print_config(cfg)


def config_sections(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, YAML block "key: ...")`` of each top-level entry of ``cfg``, resolved (Hydra's
    own ``hydra`` node left out), :data:`FIRST_KEYS` first."""
    keys = [k for k in FIRST_KEYS if k in cfg]
    keys += [k for k in cfg if k not in keys and k != "hydra"]
    sections = []
    for key in keys:
        if OmegaConf.is_missing(cfg, key):
            sections.append((key, f"{key}: ???\n"))  # a required value not given yet
            continue
        value = cfg[key]
        if OmegaConf.is_config(value):
            # resolved in place: interpolations may point anywhere in cfg
            body = OmegaConf.to_yaml(value, resolve=True)
            block = f"{key}:\n" + "".join(f"  {line}\n" for line in body.splitlines())
        else:
            block = OmegaConf.to_yaml({key: value})
        sections.append((key, block))
    return sections


def print_config(cfg: DictConfig) -> None:
    """Print the composed configuration (see :func:`config_sections`)."""
    sections = config_sections(cfg)
    try:
        import rich
        from rich.syntax import Syntax
        from rich.tree import Tree
    except ImportError:
        print("".join(block for _, block in sections), end="", flush=True)
        return
    tree = Tree("CONFIG")
    for key, block in sections:
        tree.add(key).add(Syntax(block, "yaml"))
    rich.print(tree)
