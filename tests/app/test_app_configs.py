"""Conveniences of the app's configuration (lightning-hydra-template habits): the ``extras`` group,
``paths.data_dir``, ``trainer=mps`` and the optional machine-specific ``configs/local/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from framework.extras import apply_extras

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"


# ------------------------------------------------------------------------------------- extras
def test_print_config_prints_the_resolved_tree(compose_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)  # the plain-YAML path, as without rich
    cfg = compose_cfg(["extras.print_config=true"], tmp_path)
    apply_extras(cfg)
    out = capsys.readouterr().out
    assert out.startswith("datamodule:\n  _target_: datamodules.spirals.SpiralsDataModule\n")
    heads = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert heads[:8] == [
        "datamodule", "model", "solver", "callbacks", "logger", "trainer", "paths", "extras"
    ]
    assert "hydra" not in heads and len(heads) == len(set(heads))
    assert f"  output_dir: {tmp_path}\n" in out  # resolved, not ${hydra:runtime.output_dir}
    assert "seed: 12345\n" in out


def test_extras_off(compose_cfg, tmp_path, capsys):
    apply_extras(compose_cfg(["extras.print_config=false"], tmp_path))
    apply_extras(compose_cfg(["~extras"], tmp_path))
    assert capsys.readouterr().out == ""


def test_print_config_with_rich(compose_cfg, tmp_path, capsys):
    apply_extras(compose_cfg(["extras.print_config=true"], tmp_path))
    out = capsys.readouterr().out
    assert "CONFIG" in out and "SpiralsDataModule" in out


def test_enforce_tags(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match="tags must name this run when extras.enforce_tags=true"):
        apply_extras(compose_cfg(["tags=[]", "extras.print_config=false"], tmp_path))
    apply_extras(compose_cfg(["tags=[]", "extras.print_config=false",
                              "extras.enforce_tags=false"], tmp_path))


def test_ignore_warnings(compose_cfg, tmp_path):
    for ignore in (False, True):
        cfg = compose_cfg([f"extras.ignore_warnings={ignore}", "extras.print_config=false"],
                          tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            apply_extras(cfg)
            warnings.warn("a warning", UserWarning, stacklevel=1)
        assert len(caught) == (0 if ignore else 1)


# ----------------------------------------------------------------------------------- paths, mps
def test_data_dir_is_the_root_of_file_data_sets(compose_cfg):
    cfg = compose_cfg(["datamodule=mnist"])
    assert cfg.paths.data_dir == f"{cfg.paths.root_dir}/data"
    assert cfg.datamodule.data_dir == f"{cfg.paths.root_dir}/data/mnist"
    moved = compose_cfg(["datamodule=mnist", "paths.data_dir=/mnt/datasets"])
    assert moved.datamodule.data_dir == "/mnt/datasets/mnist"


def test_trainer_mps_composes(compose_cfg):
    cfg = compose_cfg(["trainer=mps"])
    assert cfg.trainer.accelerator == "mps" and cfg.trainer.devices == 1
    assert cfg.trainer.max_epochs == compose_cfg([]).trainer.max_epochs  # the rest: default


# ---------------------------------------------------------------------------------------- local
LOCAL = """# @package _global_
paths:
  data_dir: /mnt/datasets
seed: 7
"""


def compose_from(config_dir: Path, name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture
def configs_copy(tmp_path):
    """A copy of configs/ without any machine's own local/default.yaml."""
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    (copy / "local" / "default.yaml").unlink(missing_ok=True)
    return copy


@pytest.mark.parametrize("entry", ["train", "eval"])
def test_local_config_is_optional_and_overrides_the_groups(configs_copy, entry):
    # eval.py has no datamodule group: its `datamodule` entries replace the checkpoint's
    name = "mnist" if entry == "train" else "x"
    overrides = ["datamodule=mnist"] if entry == "train" else [
        "+datamodule.data_dir=${paths.data_dir}/x"
    ]
    plain = compose_from(configs_copy, entry, overrides)
    assert plain.seed == 12345
    assert plain.datamodule.data_dir == f"{plain.paths.root_dir}/data/{name}"
    (configs_copy / "local" / "default.yaml").write_text(LOCAL)
    local = compose_from(configs_copy, entry, overrides)
    assert local.seed == 7 and local.datamodule.data_dir == f"/mnt/datasets/{name}"
    assert compose_from(configs_copy, entry, [*overrides, "seed=3"]).seed == 3  # command line wins
    assert compose_from(configs_copy, entry, [*overrides, "~local"]).seed == 12345


def test_local_example_composes(compose_cfg):
    assert compose_cfg(["local=example"]).seed == 12345  # all commented out


def test_local_configs_are_not_committed():
    def ignored(path: str) -> bool:
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        return proc.returncode == 0

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert ignored("configs/local/default.yaml")
    assert not ignored("configs/local/example.yaml")
