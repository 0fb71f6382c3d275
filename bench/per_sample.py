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

On a GPU (``python -m bench.run_all --suite bench.per_sample --device cuda``) the problems live
on the device and every timed sample waits for it (``torch.cuda.synchronize``).
"""

from __future__ import annotations

import torch

from bench import problems as P
from bench.common import BenchConfig, SuiteResult, Target
from bench.libraries import SolveSpec, TorchdiffeqLib, TorchodeLib
from bench.report import fmt_err, fmt_ms, fmt_ratio, md_table
from bench.timing import measure_interleaved, synchronized

DEVICES = ("cpu", "cuda")
SPEC = SolveSpec("dopri5", 1e-5, 1e-5)
BATCH = 256
MU_SEED = 1717


def _problems(batch: int, device: str = "cpu") -> list[P.Problem]:
    g = torch.Generator().manual_seed(P.VDP_SEED)
    y0 = (torch.rand(batch, 2, generator=g, dtype=torch.float64) * 4.0 - 2.0).to(device)
    t = torch.linspace(0.0, 10.0, 11, dtype=torch.float64, device=device)
    mu = torch.rand(batch, generator=torch.Generator().manual_seed(MU_SEED),
                    dtype=torch.float64).to(device) * 10.0
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
    for problem in _problems(batch, config.device):
        log(f"  {problem.name}")
        result.setup.append(problem.description + ("" if not config.cuda else
                                                   f", on {config.device}"))
        joint, per = _node_runner(problem, False), _node_runner(problem, True)
        fns = {"node joint": lambda j=joint: j().ys, "node per_sample": lambda p=per: p().ys}
        for lib in peers:
            fns[lib.name] = lib.runner(problem, SPEC)
        fns = {name: synchronized(fn, config.device) for name, fn in fns.items()}
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
    _gradients(result, config, batch, log)
    return result


# Gradient cases: loss = sum of squares of the outputs after t[0], gradients with respect to y0
# and mu (a parameter of one entry per sample). 101 output times: on 11, both adjoints (joint
# and per-sample) fail here, their backward re-solve of y underflowing its step (Van der Pol's
# limit cycle attracts forwards, so it repels backwards); resetting y to the forward value at
# every output time keeps that growth in check.
GRAD_OUTPUTS = 101
GRAD_MODES = ("direct", "checkpoint", "adjoint")


def _gradient_problem(batch: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(P.VDP_SEED)
    y0 = (torch.rand(batch, 2, generator=g, dtype=torch.float64) * 4.0 - 2.0).to(device)
    mu = torch.rand(batch, generator=torch.Generator().manual_seed(MU_SEED),
                    dtype=torch.float64).to(device) * 10.0
    t = torch.linspace(0.0, 10.0, GRAD_OUTPUTS, dtype=torch.float64, device=device)
    return P.VanDerPol(torch.nn.Parameter(mu)), y0, t


def _gradient_run(func, y0, t, per_sample: bool, mode: str, clock, spec=SPEC):
    """One forward and backward: ``(forward s, backward s, grads, stats)``."""
    import node

    y = y0.clone().requires_grad_(True)
    start = clock()
    sol = node.solve(func, y, t, method=spec.method, rtol=spec.rtol, atol=spec.atol,
                     per_sample=per_sample, gradient=mode)
    middle = clock()
    grads = torch.autograd.grad(sol.ys[1:].square().sum(), (y, func.mu))
    return middle - start, clock() - middle, grads, sol.stats


def _gradients(result: SuiteResult, config: BenchConfig, batch: int, log) -> None:
    import statistics
    import time

    log("  gradients")
    read = time.thread_time if config.clock == "cpu" else time.perf_counter

    def clock() -> float:  # after the device's queued work
        if config.cuda:
            torch.cuda.synchronize(config.device)
        return read()

    func, y0, t = _gradient_problem(batch, config.device)
    ref = _gradient_run(func, y0, t, True, "checkpoint", clock,
                        SolveSpec("dopri8", 1e-11, 1e-11))[2]
    variants = [(ps, mode) for ps in (False, True) for mode in GRAD_MODES]
    samples = {v: [] for v in variants}
    stats, errors = {}, {}
    rounds = max(3, config.repeats // 3)
    for _ in range(rounds + 1):  # the first round warms up
        for v in variants:
            fwd, bwd, grads, st = _gradient_run(func, y0, t, *v, clock)
            samples[v].append((fwd, bwd))
            stats[v] = st
            errors[v] = max(float((g - r).abs().max() / r.abs().max())
                            for g, r in zip(grads, ref, strict=True))
    rows = []
    for (ps, mode), timed in samples.items():
        fwd = statistics.median(f for f, _ in timed[1:])
        bwd = statistics.median(b for _, b in timed[1:])
        st = stats[(ps, mode)]
        if ps:
            steps = f"{st['n_steps'].double().mean():.1f} / {int(st['n_steps'].max())}"
            calls = st.get("n_calls_backward", "")
            back = st.get("n_steps_backward")
            back = "" if back is None else f"{back.double().mean():.1f} / {int(back.max())}"
        else:
            steps, calls = str(st["n_steps"]), st.get("nfe_backward", "")
            back = str(st.get("n_steps_backward", ""))
        name = "node per_sample" if ps else "node joint"
        rows.append((name, mode, fmt_ms(fwd), fmt_ms(bwd), steps, str(calls), back,
                     fmt_err(errors[(ps, mode)])))
        result.records.append({"problem": "vdp mu~U[0,10] gradients", "library": name,
                               "gradient": mode, "forward_s": fwd, "backward_s": bwd,
                               "clock": config.clock, "steps": steps,
                               "backward_func_calls": calls, "backward_steps": back,
                               "gradient_error": errors[(ps, mode)]})
    result.sections.append((
        f"Gradients: Van der Pol mu ~ U[0, 10], batch {batch}, dopri5 rtol=atol=1e-5, "
        f"{GRAD_OUTPUTS} outputs on [0, 10] ({config.clock} time, median of {rounds})",
        md_table(["library", "gradient", "forward ms", "backward ms",
                  "steps (mean / max per sample)", "backward func calls",
                  "backward steps (mean / max)", "gradient error"], rows)))
    result.notes.append(
        "gradients: loss = sum of squares of the outputs; gradient error = max over (y0, mu) of "
        "max|g - g_ref| / max|g_ref|, g_ref from node per_sample checkpoint with dopri8 at "
        "rtol = atol = 1e-11. Backward func calls: batched calls in the backward pass (the "
        "checkpoint modes replay accepted steps only; the adjoints evaluate func and one "
        "vector-Jacobian product per stage).")
