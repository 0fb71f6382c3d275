"""``optimization_results.yaml``: the best trial of a study (or, with several objectives, its
Pareto set), written at the root of the sweep after every batch of trials."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:
    import optuna

RESULTS_FILE = "optimization_results.yaml"


def _trial(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "params": dict(trial.params),
        "values": list(trial.values),
        "output_dir": trial.user_attrs.get("output_dir"),
    }


def summarize(study: optuna.Study, metrics: list[str] | None) -> dict[str, Any]:
    """The study's state: trial counts by state and its best trial(s) among the complete ones."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    result: dict[str, Any] = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "optimized_metric": metrics,
        "n_trials": {"total": len(trials), **{k: v for k, v in counts.items() if v}},
    }
    if counts["complete"] == 0:
        return result
    if len(study.directions) == 1:
        best = study.best_trial
        result.update(
            best_params=dict(best.params),
            best_value=best.value,
            best_trial=best.number,
            best_output_dir=best.user_attrs.get("output_dir"),
        )
    else:
        # the non-dominated trials: none is at least as good in every objective as another
        result["pareto_front"] = [_trial(t) for t in study.best_trials]
    return result


def write_results(sweep_dir: Path, study: optuna.Study, metrics: list[str] | None) -> Path:
    path = sweep_dir / RESULTS_FILE
    OmegaConf.save(OmegaConf.create(summarize(study, metrics)), path)
    return path
