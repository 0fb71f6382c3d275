"""Per-sample solving benchmark (issue 17): every sample with its own step size.

Cases (float64, one thread, dopri5 at rtol = atol = 1e-5, t from 0 to 10 with 11 outputs, batch
256, y0 uniform in [-2, 2]^2): Van der Pol with ``mu ~ U[0, 10]`` drawn per sample (mixed
stiffness: the per-sample solve should win) and with ``mu = 1`` for all (nothing to gain: the
per-sample solve should cost about what the joint one does).

Libraries: node's joint solve (one step size for the batch), node with ``per_sample=True``,
torchode (per-sample step control by design) and torchdiffeq (joint). Reported: time (median of
round-robin samples), steps (joint: steps of the batch; per-sample: mean and max over samples),
``func`` calls on the batch, and the max error against node ``per_sample=True`` with dopri8 at
rtol = atol = 1e-11.
"""

from __future__ import annotations

import torch

from bench import problems as P
from bench.common import BenchConfig, SuiteResult, Target
from bench.libraries import SolveSpec, TorchdiffeqLib, TorchodeLib
from bench.report import fmt_err, fmt_ms, fmt_ratio, md_table
from bench.timing import measure_interleaved

SPEC = SolveSpec("dopri5", 1e-5, 1e-5)
BATCH = 256
MU_SEED = 1717


def _problems(batch: int) -> list[P.Problem]:
    g = torch.Generator().manual_seed(P.VDP_SEED)
    y0 = torch.rand(batch, 2, generator=g, dtype=torch.float64) * 4.0 - 2.0
    t = torch.linspace(0.0, 10.0, 11, dtype=torch.float64)
    mu = torch.rand(batch, generator=torch.Generator().manual_seed(MU_SEED),
                    dtype=torch.float64) * 10.0
    return [
        P.Problem(name="vdp mu~U[0,10]", func=P.VanDerPol(mu), y0=y0, t=t,
                  description=f"Van der Pol, mu ~ U[0, 10] per sample, batch {batch}, float64"),
        P.Problem(name="vdp mu=1", func=P.VanDerPol(1.0), y0=y0, t=t,
                  description=f"Van der Pol, mu = 1, batch {batch}, float64"),
    ]


def _node_runner(problem: P.Problem, per_sample: bool):
    import node

    def run():
        return node.solve(problem.func, problem.y0, problem.t, method=SPEC.method,
                          rtol=SPEC.rtol, atol=SPEC.atol, per_sample=per_sample)
    return run


def _reference(problem: P.Problem) -> torch.Tensor:
    import node

    with torch.no_grad():
        return node.solve(problem.func, problem.y0, problem.t, method="dopri8", rtol=1e-11,
                          atol=1e-11, per_sample=True).ys


def run(config: BenchConfig, log=print) -> SuiteResult:
    result = SuiteResult(title="Per-sample solving", issue=17)
    peers = []
    for cls in (TorchodeLib, TorchdiffeqLib):
        try:
            peers.append(cls())
        except ImportError as exc:
            result.notes.append(f"{cls.name} not available ({exc})")
    result.versions.update({lib.name: lib.version() for lib in peers})
    batch = 64 if config.quick else BATCH
    rows, times = [], {}
    for problem in _problems(batch):
        log(f"  {problem.name}")
        result.setup.append(problem.description)
        joint, per = _node_runner(problem, False), _node_runner(problem, True)
        fns = {"node joint": lambda j=joint: j().ys, "node per_sample": lambda p=per: p().ys}
        for lib in peers:
            fns[lib.name] = lib.runner(problem, SPEC)
        timings = measure_interleaved(fns, repeats=config.repeats, warmup=config.warmup,
                                      min_time=config.min_time, max_repeats=config.max_repeats)
        ref = _reference(problem)
        with torch.no_grad():
            sj, sp = joint(), per()
        counts = {
            "node joint": (str(sj.stats["n_steps"]), sj.stats["nfe"], sj.ys),
            "node per_sample": (
                f"{sp.stats['n_steps'].double().mean():.1f} / {int(sp.stats['n_steps'].max())}",
                sp.stats["n_calls"], sp.ys),
        }
        for lib in peers:
            with torch.no_grad():
                c, ys = lib.counted(problem, SPEC)
            steps = (f"{c.extra['mean_sample_steps']:.1f} / {c.n_steps}"
                     if "mean_sample_steps" in c.extra else str(c.n_steps))
            counts[lib.name] = (steps, c.nfe, ys)
        for name, timing in timings.items():
            timing = timing.on(config.clock)
            times[(problem.name, name)] = timing.median
            steps, nfe, ys = counts[name]
            err = float((ys.double() - ref).abs().max())
            rows.append((problem.name, name, fmt_ms(timing.median), steps, str(nfe),
                         fmt_err(err)))
            result.records.append({"problem": problem.name, "library": name,
                                   "time_s": timing.median, "clock": config.clock,
                                   "wall": list(timing.wall), "cpu": list(timing.cpu),
                                   "steps": steps, "func_calls": nfe, "max_error": err})
    result.sections.append((
        f"Van der Pol, batch {batch}, dopri5 rtol=atol=1e-5 ({config.clock} time)",
        md_table(["problem", "library", "time", "steps (mean / max per sample)",
                  "func calls", "max error"], rows)))
    mixed, same = "vdp mu~U[0,10]", "vdp mu=1"

    def ratio_target(name: str, num: tuple, den: tuple, limit: float) -> None:
        a, b = times.get(num), times.get(den)
        value = None if a is None or b is None else a / b
        result.targets.append(Target(
            name, None if value is None else value <= limit,
            f"{num[1]} / {den[1]} on {num[0]}: {fmt_ratio(value)} (target <= {limit:g})"))

    ratio_target("per-sample vs joint, mixed stiffness", (mixed, "node per_sample"),
                 (mixed, "node joint"), 0.6)
    ratio_target("per-sample vs torchode, mixed stiffness", (mixed, "node per_sample"),
                 (mixed, "torchode"), 0.5)
    ratio_target("per-sample vs joint, mu = 1", (same, "node per_sample"),
                 (same, "node joint"), 1.15)
    result.notes.append(
        "steps: node joint and torchdiffeq step the batch together (one count); node "
        "per_sample and torchode give mean / max over samples of each sample's step attempts "
        "(the loop runs max times). func calls: calls on the whole batch (finished samples "
        "ride along, frozen).")
    return result
