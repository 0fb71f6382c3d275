"""Optuna searches through ``python train.py -m hparams_search=...`` (the sweeper plugin
hydra_plugins/node_optuna_sweeper): best result, failed trials, resuming a stored study, several
objectives, and errors in the search space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from omegaconf import OmegaConf  # noqa: E402

from hydra_plugins.node_optuna_sweeper._search_space import (  # noqa: E402
    SearchSpaceError,
    build_search_space,
)

ROOT = Path(__file__).resolve().parents[2]


def _search(tmp_path: Path, tiny: list[str], *overrides: str, sweep: str = "sweep", ok=True):
    """Run ``train.py -m`` on the tiny spirals model; returns (process, sweep folder)."""
    tiny = [o for o in tiny if not o.startswith(("plots.", "~callbacks"))]
    sweep_dir = tmp_path / sweep
    command = [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        "plots.enabled=false",
        "callbacks=none",
        "test=false",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={sweep_dir}",
        *tiny,
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, sweep_dir


def _results(sweep_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))


def _metrics(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_search_writes_its_best_result_and_resumes_from_storage(tmp_path, tiny_overrides):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = [
        "hparams_search=latent_ode_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=resumed",
    ]
    _, sweep = _search(tmp_path, tiny_overrides, *settings, "hydra.sweeper.n_trials=3")
    result = _results(sweep)
    assert result["n_trials"] == {"total": 3, "complete": 3}
    assert result["optimized_metric"] == ["val/extrap_rmse"]
    scores = {job: _metrics(sweep / job)["val/extrap_rmse"] for job in ("0", "1", "2")}
    assert result["best_value"] == min(scores.values())
    assert result["best_output_dir"] == str(sweep / min(scores, key=scores.get))
    # the config's whole search space, solver method and tolerances included
    params = result["best_params"]
    assert {"model.lr", "solver", "solver.rtol", "solver.atol"} <= set(params)
    assert params["solver"] in ("dopri5", "tsit5", "bosh3")
    assert 1e-5 <= params["solver.rtol"] <= 1e-2
    # the trial's parameters reached its run
    config = OmegaConf.load(Path(result["best_output_dir"]) / ".hydra" / "config.yaml")
    assert config.solver.method == params["solver"]
    assert config.solver.rtol == pytest.approx(params["solver.rtol"])
    assert (sweep / "summary.csv").is_file()  # the sweep summary callback still runs

    # the same study again: one more trial, and the results cover all four
    _, again = _search(
        tmp_path, tiny_overrides, *settings, "hydra.sweeper.n_trials=1", sweep="again"
    )
    assert _results(again)["n_trials"] == {"total": 4, "complete": 4}
    study = optuna.load_study(study_name="resumed", storage=storage)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert trials[3].user_attrs["output_dir"] == str(again / "0")
    # the resumed sampler's seed is shifted: it does not draw the first run's first trial again
    assert trials[3].params != trials[0].params


FAIL_GRID = """# @package _global_
defaults:
  - override /hydra/sweeper: node_optuna
optimized_metric: val/extrap_rmse
hydra:
  sweeper:
    n_trials: 2
    sampler:
      _target_: optuna.samplers.GridSampler
      search_space: {solver.max_num_steps: [1, 2000]}
      seed: 0
    params:
      solver.max_num_steps: choice(1, 2000)
"""


@pytest.mark.slow
def test_a_trial_whose_solver_fails_is_failed_and_the_search_goes_on(tmp_path, tiny_overrides):
    """Both grid points run: one step per solve cannot reach the end (a node.SolverError), 2000
    steps can."""
    (tmp_path / "configs" / "hparams_search").mkdir(parents=True)
    (tmp_path / "configs" / "hparams_search" / "fail_grid.yaml").write_text(FAIL_GRID)
    proc, sweep = _search(
        tmp_path, tiny_overrides, f"--config-dir={tmp_path / 'configs'}", "hparams_search=fail_grid"
    )
    result = _results(sweep)
    assert result["n_trials"] == {"total": 2, "complete": 1, "fail": 1}
    assert result["best_params"] == {"solver.max_num_steps": 2000}
    failures = list(sweep.glob("*/failure.json"))
    assert len(failures) == 1
    assert "TrainingSolverFailure" in json.loads(failures[0].read_text())["error"]
    assert "Trial failed, the search goes on" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_objectives_give_a_pareto_set(tmp_path, tiny_overrides):
    _, sweep = _search(
        tmp_path, tiny_overrides, "hparams_search=latent_ode_optuna_nfe", "hydra.sweeper.n_trials=3"
    )
    result = _results(sweep)
    assert result["directions"] == ["minimize", "minimize"]
    assert result["optimized_metric"] == ["val/extrap_rmse", "nfe_forward_per_step"]
    points = {}
    for job in ("0", "1", "2"):
        metrics = _metrics(sweep / job)
        points[str(sweep / job)] = (metrics["val/extrap_rmse"], metrics["nfe_forward_per_step"])

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())

    front = result["pareto_front"]
    assert front and "best_value" not in result
    assert {t["output_dir"] for t in front} == {d for d, p in points.items() if not dominated(p)}
    for trial in front:
        assert tuple(trial["values"]) == points[trial["output_dir"]]
        assert "solver.rtol" in trial["params"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model.lr": "interval(0.1)"}, "hydra.sweeper.params['model.lr']: not a valid Hydra"),
        ({"model.lr": "tag(log, interval(0, 1))"}, "'model.lr']: a log scale needs low > 0"),
        ({"m.n": "tag(lg, interval(1, 2))"}, "'m.n']: unknown tags ['lg']"),
        ({"m.n": "interval(2, 1)"}, "'m.n']: low=2.0 is above high=1.0"),
        ({"m.n": "range(3, 1)"}, "'m.n']: the range is empty"),
        ({"m.n": {"type": "real", "low": 1}}, "'m.n']: 'type' must be one of"),
        ({"m.n": {"type": "int", "low": 1.5, "high": 3}}, "'low' must be an integer, got 1.5"),
        ({"m.n": {"type": "float", "low": 1, "high": 2, "lo": 0}}, "unknown keys ['lo']"),
        ({"m.n": {"type": "categorical", "choices": []}}, "'choices' must be a non-empty list"),
    ],
)
def test_search_space_errors_name_the_key(params, message):
    with pytest.raises(SearchSpaceError) as info:
        build_search_space(params, [])
    assert message in str(info.value)


def test_search_space_forms_and_fixed_overrides():
    space, fixed = build_search_space(
        {
            "model.lr": "tag(log, interval(1e-4, 1e-1))",
            "model.channels": {"type": "int", "low": 16, "high": 64, "step": 16},
            "solver": "choice(dopri5, tsit5)",
            "solver.rtol": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            "model.depth": "range(1, 5)",
            "trainer.max_epochs": 20,
        },
        ["~recipe", "solver.atol=1e-3,1e-4", "model.depth=3"],
    )
    d = optuna.distributions
    assert space == {
        "model.lr": d.FloatDistribution(1e-4, 1e-1, log=True),
        "model.channels": d.IntDistribution(16, 64, step=16),
        "solver": d.CategoricalDistribution(["dopri5", "tsit5"]),
        "solver.rtol": d.FloatDistribution(1e-6, 1e-2, log=True),
        "solver.atol": d.CategoricalDistribution([1e-3, 1e-4]),
    }
    # the command line wins: model.depth is fixed there
    assert fixed == ["trainer.max_epochs=20", "~recipe", "model.depth=3"]


def test_sweeper_rejects_directions_that_do_not_match_the_metrics():
    from hydra_plugins.node_optuna_sweeper.sweeper import NodeOptunaSweeper

    with pytest.raises(ValueError, match="hydra.sweeper.direction must be minimize, maximize"):
        NodeOptunaSweeper(direction="min")
    sweeper = NodeOptunaSweeper(direction=["minimize", "minimize"])
    config = OmegaConf.create({"optimized_metric": "val/loss", "hydra": {}})
    with pytest.raises(ValueError, match="optimized_metric has 1 entries"):
        sweeper.setup(hydra_context=None, task_function=None, config=config)


def test_a_bad_search_space_stops_the_sweep_before_any_trial(tmp_path):
    from hydra_plugins.node_optuna_sweeper.sweeper import NodeOptunaSweeper

    class Launcher:
        def launch(self, *args, **kwargs):
            raise AssertionError("a trial was launched")

    sweeper = NodeOptunaSweeper(params={"model.lr": {"type": "float", "low": 1e-3}})
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher = Launcher()
    with pytest.raises(SearchSpaceError, match=r"hydra.sweeper.params\['model.lr'\]: 'high' miss"):
        sweeper.sweep([])


SEARCHES = {
    "latent_ode_optuna": [],
    "latent_ode_optuna_nfe": [],
    "odenet_optuna": ["experiment=digits_odenet"],
    "odenet_optuna_nfe": ["experiment=digits_odenet"],
}


def test_every_search_config_is_listed():
    found = {p.stem for p in (ROOT / "configs" / "hparams_search").glob("*.yaml")}
    assert found == set(SEARCHES)


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_configs_name_keys_of_their_run(name, compose_cfg, tmp_path):
    """Every searched key exists in the run's config (or names a config group), and there is a
    direction per optimized metric."""
    from hydra.core.hydra_config import HydraConfig

    from hydra_plugins.node_optuna_sweeper.sweeper import NodeOptunaSweeper

    cfg = compose_cfg([*SEARCHES[name], f"hparams_search={name}"], tmp_path)
    sweeper_cfg = cfg.hydra.sweeper
    assert sweeper_cfg._target_.endswith("NodeOptunaSweeper")
    assert sweeper_cfg.sampler.seed is not None
    space, fixed = build_search_space(OmegaConf.to_container(sweeper_cfg.params), [])
    assert {"solver", "solver.rtol", "solver.atol"} <= set(space) and not fixed
    choices = HydraConfig.get().runtime.choices
    for key in space:
        assert key in choices or OmegaConf.select(cfg, key, default="missing") != "missing", key
    sweeper = NodeOptunaSweeper(direction=sweeper_cfg.direction, params=sweeper_cfg.params)
    metrics = [cfg.optimized_metric] if isinstance(cfg.optimized_metric, str) else list(
        cfg.optimized_metric
    )
    assert len(metrics) == len(sweeper.directions)
    assert all(m.startswith("val/") for m in metrics[:1])  # never a test metric


def _wrapped_solver_error():
    from node.errors import SolverError, Status

    try:
        raise SolverError(Status.STEP_TOO_SMALL, 0.5, 1e-12, "step size underflow at t=0.5")
    except SolverError as err:
        try:
            raise RuntimeError("the model failed") from err
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize(
    ("status", "value", "state", "goes_on"),
    [
        ("COMPLETED", 0.25, "COMPLETE", True),
        ("COMPLETED", float("nan"), "FAIL", True),  # a diverged run's metric
        ("FAILED", "training_failure", "FAIL", True),
        ("FAILED", "wrapped", "FAIL", True),  # a solver failure as the cause of another error
        ("FAILED", KeyError("optimized_metric ['val/x'] not logged"), "FAIL", False),
        ("COMPLETED", [0.1, 2.0], "FAIL", False),  # two values for one direction
        ("COMPLETED", None, "FAIL", False),  # optimized_metric unset
    ],
)
def test_trial_outcomes(status, value, state, goes_on):
    from hydra.core.utils import JobReturn, JobStatus

    from framework.failure import TrainingSolverFailure
    from hydra_plugins.node_optuna_sweeper.config import SOLVER_FAILURES
    from hydra_plugins.node_optuna_sweeper.sweeper import NodeOptunaSweeper

    if value == "training_failure":
        value = TrainingSolverFailure("ODE solver failed during training")
    elif value == "wrapped":
        value = _wrapped_solver_error()
    sweeper = NodeOptunaSweeper(failure_exceptions=SOLVER_FAILURES)
    told, values, error = sweeper._outcome(
        JobReturn(status=JobStatus[status], _return_value=value)
    )
    assert told.name == state
    assert (error is None) == goes_on
    assert values == ([0.25] if state == "COMPLETE" else None)
