"""Hydra configuration: every group composes, every option builds, bad overrides fail clearly."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
)
from omegaconf import OmegaConf

import node
from framework.run import build_model
from models.components import ODESolver

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
GROUPS = [
    "model",
    "datamodule",
    "solver",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "extras",
    "local",
    "hydra",
    "recipe",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_config_groups_exist():
    for group in GROUPS:
        assert options(group), f"configs/{group}/ has no options"
    assert set(options("solver")) >= {
        "dopri5",
        "tsit5",
        "bosh3",
        "dopri8",
        "rk4",
        "euler",
        "midpoint",
        "adaptive_heun",
    }


@pytest.mark.parametrize(
    "override", [f"{group}={option}" for group in GROUPS for option in options(group)]
)
def test_every_group_option_composes(override, compose_cfg, tmp_path):
    cfg = compose_cfg([override], tmp_path)
    for key in ("model", "datamodule", "solver", "trainer", "paths"):
        assert key in cfg, f"{override}: '{key}' missing after composition"
    assert cfg.paths.output_dir == str(tmp_path)
    assert cfg.model._target_ and cfg.datamodule._target_ and cfg.trainer._target_


@pytest.mark.parametrize("solver", options("solver"))
def test_every_solver_config_builds_a_solver(solver, compose_cfg):
    cfg = compose_cfg([f"solver={solver}"])
    built = hydra.utils.instantiate(cfg.solver)
    assert isinstance(built, node.SolverConfig)
    method = "dopri5" if solver == "_base" else solver  # the base config is dopri5's
    assert built.method == method
    # fixed-step methods come with a step size; adaptive ones with a step budget instead
    adaptive = node.get_tableau(method).adaptive
    assert (built.step_size is None) == adaptive
    assert built.fixed_grid != adaptive
    assert built.max_num_steps is not None
    assert ODESolver(built).config is built


def test_solver_presets_set_only_what_differs_from_the_base():
    base = OmegaConf.load(CONFIGS / "solver" / "_base.yaml")
    for name in options("solver"):
        if name == "_base":
            continue
        preset = OmegaConf.load(CONFIGS / "solver" / f"{name}.yaml")
        assert list(preset.defaults) == ["_base", "_self_"], name
        own = set(preset) - {"defaults"}
        assert own <= set(base) and own <= {"method", "step_size", "max_num_steps"}, name
    # the base lists every field of node.SolverConfig
    fields = set(inspect.signature(node.SolverConfig).parameters)
    assert set(base) - {"_target_", "_convert_"} == fields


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("datamodule", options("datamodule"))
def test_models_take_their_solver_from_the_solver_group(model, datamodule, compose_cfg):
    overrides = [
        f"model={model}",
        f"datamodule={datamodule}",
        "solver=rk4",
        "solver.step_size=0.05",
        "solver.gradient=adjoint",
    ]
    cfg = compose_cfg(overrides)

    # the data shapes a model takes: vectors (obs_dim) or, for classifiers, images and classes
    # (or, for the kinetics model, the number of species and their scales)
    parameters = inspect.signature(hydra.utils.get_class(cfg.model._target_)).parameters
    dims = {"obs_dim": 2}
    if "input_shape" in parameters:
        dims = {"input_shape": [1, 8, 8], "n_classes": 10}
    elif "state_dim" in parameters:
        dims = {"state_dim": 3, "scales": [1.0, 1e-5, 1.0]}
    built = build_model(cfg.model, hydra.utils.instantiate(cfg.solver), **dims)
    solvers = built.ode_solvers()
    assert solvers and all(s.method == "rk4" and s.step_size == 0.05 for s in solvers)
    assert all(s.gradient == "adjoint" for s in solvers)


def test_spirals_30_point_recipe_is_the_base_recipe_plus_its_own_settings(compose_cfg):
    derived = compose_cfg(["experiment=spirals_chen2018_30"])
    base = compose_cfg(
        [
            "experiment=spirals_chen2018",
            "task_name=spirals_chen2018_30",
            "datamodule.n_obs=30",
            "model.obs_std=0.12",
            "model.latent_dim=8",
            "trainer.check_val_every_n_epoch=10",
        ]
    )
    # the derived recipe's own values win over those of the recipe it extends
    assert compose_cfg(["experiment=spirals_chen2018"]).datamodule.n_obs == 100
    assert derived.datamodule.n_obs == 30 and derived.model.obs_std == 0.12
    assert derived.model.latent_dim == 8
    assert derived.model.weight_decay == 1e-4  # the base recipe's
    derived, base = (OmegaConf.to_container(c, resolve=False) for c in (derived, base))
    assert derived == base


def test_unknown_solver_name_lists_the_options(compose_cfg):
    with pytest.raises(MissingConfigException) as info:
        compose_cfg(["solver=rk45"])
    message = str(info.value)
    assert "Could not find 'solver/rk45'" in message
    assert "dopri5" in message and "tsit5" in message


def test_unknown_key_override_is_rejected(compose_cfg):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["solver.rtoll=1e-3"])
    assert "solver.rtoll" in str(info.value)


def test_bad_solver_value_names_the_setting(compose_cfg):
    cfg = compose_cfg(["solver.gradient=backprop"])
    with pytest.raises(InstantiationException) as info:
        hydra.utils.instantiate(cfg.solver)
    message = str(info.value)
    assert "gradient must be one of" in message and "got 'backprop'" in message
    assert "full_key: solver" in message


def test_command_line_reports_unknown_solver():
    proc = subprocess.run(
        [sys.executable, "train.py", "solver=rk45"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Could not find 'solver/rk45'" in proc.stderr
    assert "Available options in 'solver'" in proc.stderr
