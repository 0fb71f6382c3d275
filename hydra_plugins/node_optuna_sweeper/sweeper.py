"""The search loop: Optuna's ask-and-tell interface over Hydra jobs.

Each round asks the study for ``n_jobs`` trials (their parameters drawn from the search space,
:mod:`._search_space`), launches them as one batch of Hydra jobs (the fixed overrides plus
``key=value`` per parameter) and tells each trial its outcome:

- the job's return value (``train.py`` returns ``optimized_metric``; a list for several
  objectives): COMPLETE, or FAIL when a value is not finite (a diverged run's NaN loss);
- the job raised one of ``failure_exceptions`` (by default the ODE solver's failures): FAIL, and
  the search goes on;
- the job raised anything else: FAIL, and the search stops with that error (most likely a mistake
  shared by every trial, such as an ``optimized_metric`` the model does not log).

Trials asked for but never run (the launch itself failed, or was interrupted) are told FAIL too,
so that a stored study holds no trial left RUNNING. After every round
``optimization_results.yaml`` at the root of the sweep holds the study's best trial, or its
Pareto set with several objectives (:mod:`._results`).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _exception_classes(names: Sequence[str]) -> tuple[type[BaseException], ...]:
    classes = []
    for name in names:
        module, _, attr = str(name).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr) if module else None
        except ImportError as err:
            raise ValueError(
                f"hydra.sweeper.failure_exceptions: cannot import {name!r}: {err}"
            ) from err
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ValueError(
                f"hydra.sweeper.failure_exceptions: {name!r} is not an exception class"
            )
        classes.append(cls)
    return tuple(classes)


def _caused_by(error: BaseException, classes: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error`` or an exception it was raised from is one of ``classes``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, classes):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _as_list(value: Any) -> list:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, list | tuple) else [value]


def _tell(study: Any, trial: Any, values: list[float] | None, state: Any) -> bool:
    """Tell ``trial``'s outcome; ``False`` when the sampler asks to end the study.

    A sampler ends a study with ``Study.stop()`` in its ``after_trial`` (``GridSampler`` once
    every grid point ran), which raises ``RuntimeError`` outside ``Study.optimize``; the trial's
    outcome is stored by then."""
    from optuna.trial import TrialState

    try:
        study.tell(trial, values, state)
    except RuntimeError:
        stored = study.get_trials(deepcopy=False)[trial.number]
        if stored.state == TrialState.RUNNING:
            raise
        return False
    return True


class NodeOptunaSweeper(Sweeper):
    """Hydra sweeper searching ``params`` with Optuna (keys: :mod:`.config`)."""

    def __init__(
        self,
        direction: Any = "minimize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Any = None,
        params: Any = None,
        failure_exceptions: Sequence[str] = (),
    ) -> None:
        self.directions = [str(d) for d in _as_list(direction)]
        bad = [d for d in self.directions if d not in ("minimize", "maximize")]
        if not self.directions or bad:
            raise ValueError(
                "hydra.sweeper.direction must be minimize, maximize or a list of them, got "
                f"{direction!r}"
            )
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"hydra.sweeper.{name} must be a positive integer, got {value!r}")
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler_cfg = sampler
        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=True)
        self.params = dict(params or {})
        self.failure_classes = _exception_classes(_as_list(failure_exceptions or []))
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.metrics: list[str] | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        # the app's objective(s) (train.py's `optimized_metric`), checked against the directions
        # before any trial runs
        if "optimized_metric" in config:
            metric = config.optimized_metric
            if metric is None:
                raise ValueError(
                    "optimized_metric is null: an Optuna search needs the metric(s) to optimize, "
                    "e.g. optimized_metric=val/loss"
                )
            self.metrics = [str(m) for m in _as_list(metric)]
            if len(self.metrics) != len(self.directions):
                raise ValueError(
                    f"optimized_metric has {len(self.metrics)} entries {self.metrics} but "
                    f"hydra.sweeper.direction has {len(self.directions)} {self.directions}: "
                    "give one direction per metric"
                )
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _sampler(self, n_existing: int) -> Any:
        from hydra.utils import instantiate

        if self.sampler_cfg is None:
            return None
        cfg = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg, resolve=True))
        if cfg.get("seed") is not None and n_existing:
            # a resumed study: the same seed would draw the first run's startup points again
            cfg.seed = int(cfg.seed) + n_existing
            log.info(f"Resuming a study of {n_existing} trials: sampler seed {cfg.seed}")
        return instantiate(cfg)

    def _study(self) -> Any:
        import optuna

        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            directions=self.directions,
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(),  # replaced below
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise ValueError(
                f"study {study.study_name!r} in {self.storage} has directions {stored}, "
                f"hydra.sweeper.direction is {self.directions}"
            )
        study.sampler = self._sampler(len(study.get_trials(deepcopy=False)))
        return study

    def _outcome(self, ret: JobReturn) -> tuple[Any, list[float] | None, BaseException | None]:
        """``(state, values, error to raise)`` of a finished job."""
        from optuna.trial import TrialState

        if ret.status != JobStatus.COMPLETED:
            error = ret._return_value
            if isinstance(error, BaseException) and _caused_by(error, self.failure_classes):
                log.warning(f"Trial failed, the search goes on: {type(error).__name__}: {error}")
                return TrialState.FAIL, None, None
            return TrialState.FAIL, None, error
        values = _as_list(ret.return_value)
        if values == [None]:
            return TrialState.FAIL, None, ValueError(
                "the job returned nothing: set optimized_metric, the metric(s) to optimize"
            )
        if len(values) != len(self.directions):
            return TrialState.FAIL, None, ValueError(
                f"the job returned {len(values)} value(s) {values} for "
                f"{len(self.directions)} direction(s) {self.directions}"
            )
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError) as err:
            error = ValueError(f"the job returned non-numbers {values}: {err}")
            return TrialState.FAIL, None, error
        if not all(math.isfinite(v) for v in values):
            log.warning(f"Trial failed, the search goes on: non-finite objective {values}")
            return TrialState.FAIL, None, None
        return TrialState.COMPLETE, values, None

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        from ._results import write_results
        from ._search_space import build_search_space, override_value

        if self.config is None or self.launcher is None:
            raise RuntimeError("NodeOptunaSweeper.setup() must run before sweep()")
        space, fixed = build_search_space(self.params, arguments)
        if not space:
            raise ValueError(
                "the Optuna search has no parameter to search: give hydra.sweeper.params "
                "(e.g. from an hparams_search config) or sweep overrides such as "
                "'model.lr=tag(log,interval(1e-4,1e-1))'"
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._study()
        log.info(f"Study {study.study_name}: {self.n_trials} trials, directions {self.directions}")
        log.info("Search space: " + ", ".join(f"{k}: {v}" for k, v in space.items()))

        returns: list[Sequence[JobReturn]] = []
        done = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [
                [*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items())]
                for trial in trials
            ]
            told = set()
            try:
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=done)
                stop = None
                sampler_stop = False
                for trial, ret in zip(trials, results, strict=True):
                    if ret.hydra_cfg is not None:  # None: the job failed before it started
                        output_dir = ret.hydra_cfg.hydra.runtime.output_dir
                        trial.set_user_attr("output_dir", str(output_dir))
                    state, values, error = self._outcome(ret)
                    sampler_stop = sampler_stop or not _tell(study, trial, values, state)
                    told.add(trial.number)
                    log.info(
                        f"Trial {trial.number} {state.name.lower()}: values {values}, "
                        f"params {trial.params}"
                    )
                    stop = stop or error
            finally:
                # never leave a trial RUNNING in a stored study
                for trial in trials:
                    if trial.number not in told:
                        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            done += len(trials)
            returns.append(results)
            path = write_results(sweep_dir, study, self.metrics)
            if stop is not None:
                raise stop
            if sampler_stop:
                log.info(f"The sampler ended the search after {done} trials")
                break
        log.info(f"Best result: {path}")
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise RuntimeError(f"no trial of study {study.study_name!r} completed; see {path}")
        return returns
