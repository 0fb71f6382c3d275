"""Two-phase latent-ODE recipes for Chen et al.'s spirals, as one command.

Phase one trains the whole latent ODE (``experiment=spirals_chen2018``, or ``_30``); phase two
trains a new GRU encoder for its frozen flow and decoder (``experiment=spirals_chen2018_encoder``,
or ``_30_encoder``) from phase one's ``last.ckpt`` (``--start best``: from its best checkpoint,
chosen by ``val/extrap_rmse_encoder``), and is scored as the paper does (from the encoder's
posterior mean): README, "Chen et al.'s spirals".

A phase one whose flow got stuck (with 30 points and latent dimension 6 two of six seeds sat at
a validation extrapolation RMSE near 0.35-0.4, where working runs reach 0.14-0.17; none with 8)
would give phase two nothing to learn: phase one is then run again with seed ``S + 100`` (at
most ``--restarts`` times). The test uses validation data only: the best ``val/extrap_rmse``
(from the posterior mode) of the run, against ``--restart-above`` (0.3).

    python -m framework.two_phase --points 30 --seed 1
    python -m framework.two_phase --points 100 --seed 2 trainer.max_epochs=500   # + overrides

Each phase writes its usual run folder under ``logs/two_phase/<points>pts_s<seed>/<time>/``
(``phase1``, ``phase1_restart1``, ``phase2``); ``summary.json`` there lists the runs, the
restart decisions and phase two's test metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from framework.compose import ROOT, compose_run

# points -> (phase one overrides, phase two overrides)
RECIPES: dict[int, tuple[list[str], list[str]]] = {
    100: (["experiment=spirals_chen2018"], ["experiment=spirals_chen2018_encoder"]),
    50: (["experiment=spirals_chen2018", "datamodule.n_obs=50"],
         ["experiment=spirals_chen2018_encoder", "datamodule.n_obs=50"]),
    30: (["experiment=spirals_chen2018_30"], ["experiment=spirals_chen2018_30_encoder"]),
}
MONITOR = "val/extrap_rmse"
RESTART_ABOVE = 0.3
SEED_STEP = 100
# --start: phase one's checkpoint that phase two starts from -> its key in the run's paths
STARTS = {"last": "last_checkpoint", "best": "best_checkpoint"}


def best_validation(result: dict[str, Any], monitor: str = MONITOR) -> float:
    """The lowest ``monitor`` a run logged (from its CSV metrics log); ``inf`` if never."""
    values = []
    for place in result["paths"]["metrics"]:
        if place.endswith(".csv") and Path(place).exists():
            with open(place, newline="") as handle:
                values += [float(row[monitor]) for row in csv.DictReader(handle)
                           if row.get(monitor)]
    return min(values, default=math.inf)


def run_phase(overrides: list[str], output_dir: Path) -> dict[str, Any]:
    from framework.run import train

    return train(compose_run(overrides, output_dir))


def two_phase(points: int, seed: int, extra: list[str], out: Path,
              restart_above: float = RESTART_ABOVE, restarts: int = 1,
              start: str = "last") -> dict[str, Any]:
    """Run the recipe for ``points`` observed points from ``seed`` into ``out``; the summary.
    ``start``: the phase-one checkpoint phase two starts from, one of :data:`STARTS`."""
    if points not in RECIPES:
        raise ValueError(f"points must be one of {sorted(RECIPES)}, got {points!r}")
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {list(STARTS)}, got {start!r}")
    first, second = RECIPES[points]
    summary: dict[str, Any] = {"points": points, "seed": seed, "overrides": extra,
                               "restart_above": restart_above, "phase_one": []}
    phase_seed, attempt = seed, 0
    while True:
        name = "phase1" if attempt == 0 else f"phase1_restart{attempt}"
        result = run_phase([*first, f"seed={phase_seed}", *extra], out / name)
        best = best_validation(result)
        stuck = best > restart_above
        summary["phase_one"].append({"seed": phase_seed, "output_dir": str(out / name),
                                     f"best {MONITOR}": best, "stuck": stuck})
        if not stuck or attempt == restarts:
            break
        attempt += 1
        phase_seed = seed + SEED_STEP * attempt
    checkpoint = result["paths"][STARTS[start]]
    if not checkpoint:
        callback = "last_checkpoint" if start == "last" else "model_checkpoint"
        raise RuntimeError(f"phase one wrote no {start} checkpoint in {out / name}: phase two "
                           f"needs it (keep the {callback} callback)")
    final = run_phase([*second, f"seed={seed}", f"init_from={checkpoint}", *extra],
                      out / "phase2")
    summary["phase_two"] = {"output_dir": str(out / "phase2"), "start": start,
                            "init_from": checkpoint,
                            "test": {k: v for k, v in final["metrics"].items()
                                     if k.startswith("test/")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m framework.two_phase", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, required=True, choices=sorted(RECIPES),
                        help="observed points per series (Chen et al.'s 30, 50 or 100)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--restart-above", type=float, default=RESTART_ABOVE,
                        help=f"rerun phase one when its best {MONITOR} is above this")
    parser.add_argument("--restarts", type=int, default=1, help="at most this many reruns")
    parser.add_argument("--start", choices=list(STARTS), default="last",
                        help="phase two starts from phase one's last checkpoint or its best one "
                             "(by the experiment's monitor, val/extrap_rmse_encoder)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the runs (default logs/two_phase/<points>pts_s<seed>/"
                             "<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both phases")
    args = parser.parse_args(argv)
    out = args.out or (ROOT / "logs" / "two_phase" / f"{args.points}pts_s{args.seed}"
                       / time.strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    summary = two_phase(args.points, args.seed, args.overrides, out, args.restart_above,
                        args.restarts, args.start)
    test = summary["phase_two"]["test"]
    print(f"two-phase recipe, {args.points} points, seed {args.seed}: phase one "
          + ", ".join(f"seed {p['seed']} (best {MONITOR} {p[f'best {MONITOR}']:.4g}"
                      f"{', stuck' if p['stuck'] else ''})" for p in summary["phase_one"])
          + f"; test/extrap_rmse_encoder {test.get('test/extrap_rmse_encoder', math.nan):.4g}"
          f" (the paper's protocol), test/extrap_rmse {test.get('test/extrap_rmse', math.nan):.4g}"
          f"; summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
