"""The sweeper's config node: ``hydra/sweeper=node_optuna`` (keys documented in the fields)."""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# Exceptions (dotted class names) that mark a trial as failed while the search goes on: the ODE
# solver giving up is an outcome of the sampled settings (a too-small step budget, a tolerance the
# model cannot meet), not a broken search. Any other exception fails its trial and stops the
# search, since it is most likely a mistake in the configuration shared by every trial.
SOLVER_FAILURES = ["node.SolverError", "framework.failure.TrainingSolverFailure"]


@dataclass
class NodeOptunaSweeperConf:
    _target_: str = "hydra_plugins.node_optuna_sweeper.sweeper.NodeOptunaSweeper"
    # the sampler is built by the sweeper (its seed is shifted when a stored study is resumed)
    _recursive_: bool = False
    # minimize | maximize, or a list of them, one per entry of `optimized_metric`
    direction: Any = "minimize"
    # the study's name in `storage`; null: a new name of Optuna's (then a study cannot be resumed)
    study_name: str | None = None
    # an Optuna storage URL, e.g. sqlite:///logs/optuna.db; null: in memory. With a storage and a
    # study_name, running the search again adds n_trials trials to the same study
    storage: str | None = None
    # trials run by this invocation
    n_trials: int = 20
    # trials asked for and launched together: in parallel with a parallel launcher (joblib)
    n_jobs: int = 1
    # an Optuna sampler; `seed` makes the search reproducible
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    # key -> search space: Hydra's sweep syntax (`interval(0.1, 1)`, `tag(log, interval(1e-5,
    # 1e-2))`, `tag(int, interval(8, 64))`, `range(1, 5)`, `choice(a, b)`, `a,b`), a mapping
    # ({type: float | int | categorical, low, high, log, step, choices}), or a fixed value
    params: dict[str, Any] | None = None
    # dotted exception class names that fail a trial without stopping the search
    failure_exceptions: list[str] = field(default_factory=lambda: list(SOLVER_FAILURES))


ConfigStore.instance().store(
    group="hydra/sweeper", name="node_optuna", node=NodeOptunaSweeperConf, provider="node"
)
