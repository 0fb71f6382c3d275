"""Forward-solve benchmark: node against torchdiffeq and torchode (issue 2, "Benchmark").

Cases:

* (a) Van der Pol, batch 256, dopri5 and tsit5 at rtol = atol in {1e-3, 1e-5, 1e-7}: function
  evaluations, wall time, max error against a tight reference;
* (b) neural ODEs (MLP 2-64-64-2 and 32-256-256-32, batch 512, float32), dopri5 and tsit5 at
  rtol = atol = 1e-5 on t in [0, 1]: wall time, nfe, overhead factor;
* (c) fixed-step rk4 (3/8 rule), 100 steps, on Van der Pol and both MLPs;
* (d) dopri8 on Van der Pol and on a linear problem with exact solution, rtol = atol in
  {1e-6, 1e-8}, 50 output times: error at the output times.

For every run:

* ``t_func``: time of one ``func(t, y0)`` call on the full batch, from a loop of calls that is
  timed round-robin with the solves (so both see the same machine conditions);
* overhead factor = wall / (nfe * t_func) (1.0 is the physical limit);
* solver overhead per step = (wall - nfe * t_func) / n_steps, computed for each round from that
  round's solve and func-loop samples; the median over rounds is reported, its IQR is the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench import problems as P
from bench.common import BenchConfig, SuiteResult, Target
from bench.libraries import Counts, Library, SolveSpec, load_libraries
from bench.report import fmt_err, fmt_ms, fmt_ratio, fmt_us, md_table
from bench.timing import Timing, measure_interleaved

REF = "torchdiffeq"
PEER = "torchode"


@dataclass
class Case:
    group: str
    problem: P.Problem
    spec: SolveSpec


@dataclass
class Run:
    """One library on one case. ``timing`` and ``t_func`` were sampled in the same rounds
    (``t_func.samples[r]`` was measured right next to ``timing.samples[r]``)."""

    case: Case
    lib: str
    counts: Counts
    timing: Timing
    t_func: Timing
    error: float | None

    @property
    def wall(self) -> float:
        return self.timing.median

    def _overheads(self) -> list[float]:
        """Per-round solver overhead per step: (solve - nfe * func call) / steps, paired by
        round so that a slow round of the machine affects both terms alike."""
        nfe, steps = self.counts.nfe, max(self.counts.n_steps, 1)
        return [(w - nfe * f) / steps
                for w, f in zip(self.timing.samples, self.t_func.samples, strict=False)]

    @property
    def overhead_per_step(self) -> float:
        return Timing(tuple(self._overheads())).median

    @property
    def overhead_noise_per_step(self) -> float:
        """Interquartile range of the per-round overheads per step."""
        return Timing(tuple(self._overheads())).iqr

    @property
    def factor(self) -> float:
        return self.wall / (self.counts.nfe * self.t_func.median)

    def record(self) -> dict:
        c = self.case
        return {
            "group": c.group, "problem": c.problem.name, "method": c.spec.method,
            "rtol": c.spec.rtol, "atol": c.spec.atol, "fixed_steps": c.spec.steps,
            "library": self.lib, "nfe": self.counts.nfe, "n_steps": self.counts.n_steps,
            **{f"extra_{k}": v for k, v in self.counts.extra.items()},
            "clock": self.timing.clock,
            "time_s_median": self.wall, "time_s_iqr": self.timing.iqr,
            "time_samples_s": list(self.timing.samples),
            "wall_samples_s": list(self.timing.wall), "cpu_samples_s": list(self.timing.cpu),
            "t_func_s": self.t_func.median, "t_func_iqr_s": self.t_func.iqr,
            "t_func_samples_s": list(self.t_func.samples),
            "overhead_factor": self.factor, "overhead_per_step_s": self.overhead_per_step,
            "overhead_per_step_iqr_s": self.overhead_noise_per_step,
            "max_error": self.error,
        }


def _cases(config: BenchConfig) -> tuple[list[Case], list[P.Problem]]:
    vdp = P.van_der_pol(batch=256, n_out=11)
    vdp50 = P.van_der_pol(batch=256, n_out=50)
    lin50 = P.linear_oscillator(batch=256, n_out=50)
    small, large = P.mlp_small(512), P.mlp_large(512)

    quick = config.quick
    cases = []
    for method in ("dopri5", "tsit5"):
        for tol in (1e-5,) if quick else (1e-3, 1e-5, 1e-7):
            cases.append(Case("a", vdp, SolveSpec(method, tol, tol)))
    for prob in (small, large):
        for method in ("dopri5",) if quick and prob is large else ("dopri5", "tsit5"):
            cases.append(Case("b", prob, SolveSpec(method, 1e-5, 1e-5)))
    for prob in (vdp, small) if quick else (vdp, small, large):
        cases.append(Case("c", prob, SolveSpec("rk4", steps=100)))
    for prob in (vdp50, lin50):
        for tol in ((1e-6,) if prob is vdp50 else (1e-8,)) if quick else (1e-6, 1e-8):
            cases.append(Case("d", prob, SolveSpec("dopri8", tol, tol)))
    problems = [vdp, vdp50, lin50, small, large]
    return cases, problems


def _func_loop(problem: P.Problem, calls: int):
    """``calls`` back-to-back ``func(t0, y0)`` calls on the full batch (timed next to the solves;
    the per-call time is the sample divided by ``calls``)."""
    func, y0, t0 = problem.func, problem.y0, problem.t[0]

    def loop():
        for _ in range(calls):
            func(t0, y0)

    return loop


def _max_error(problem: P.Problem, ys: torch.Tensor) -> float | None:
    if problem.reference is None:
        return None
    ref = problem.reference()
    return float((ys.detach().double() - ref).abs().max())


FUNC = "__func__"


def _measure_case(case: Case, libs: list[Library], config: BenchConfig, log) -> list[Run]:
    active = [lib for lib in libs if lib.supports(case.spec)]
    counts = {}
    errors = {}
    with torch.no_grad():
        for lib in active:
            c, ys = lib.counted(case.problem, case.spec)
            counts[lib.name] = c
            errors[lib.name] = _max_error(case.problem, ys)
    fns = {lib.name: lib.runner(case.problem, case.spec) for lib in active}
    # The func calls are one more member of the round-robin, as many per sample as a solve makes.
    calls = max(c.nfe for c in counts.values())
    fns[FUNC] = _func_loop(case.problem, calls)
    timings = measure_interleaved(
        fns, repeats=config.repeats, warmup=config.warmup, min_time=config.min_time,
        max_repeats=config.max_repeats,
    )
    ft = timings.pop(FUNC)
    t_func = Timing(tuple(x / calls for x in ft.wall), 1, tuple(x / calls for x in ft.wall),
                    tuple(x / calls for x in ft.cpu)).on(config.clock)
    runs = [Run(case, name, counts[name], timings[name].on(config.clock), t_func, errors[name])
            for name in timings]
    for r in runs:
        log(f"  [{case.group}] {case.problem.name:<18} {case.spec.label():<18} {r.lib:<12} "
            f"nfe={r.counts.nfe:<5} steps={r.counts.n_steps:<4} {config.clock}={fmt_ms(r.wall)} ms "
            f"func={r.t_func.median * 1e6:.1f} us "
            f"ovh/step={fmt_us(r.overhead_per_step)} us"
            + (f" err={fmt_err(r.error)}" if r.error is not None else ""))
    return runs


def _by_case(runs: list[Run]) -> dict[tuple, dict[str, Run]]:
    table: dict[tuple, dict[str, Run]] = {}
    for r in runs:
        key = (r.case.group, r.case.problem.name, r.case.spec)
        table.setdefault(key, {})[r.lib] = r
    return table


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _table(group_runs: dict[tuple, dict[str, Run]], lib_order: list[str], with_error: bool,
           with_tfunc: bool, clock: str) -> str:
    headers = ["problem", "method", "library", "nfe", "steps", f"{clock} ms (IQR)"]
    right = [False, False, False, True, True, True]
    if with_error:
        headers += ["max error", "error / tdq"]
        right += [True, True]
    if with_tfunc:
        headers += ["func call us"]
        right += [True]
    headers += ["overhead factor", "overhead/step us (noise)", "ovh/step / tdq",
                f"{clock} / tdq", f"{clock} / torchode"]
    right += [True] * 5
    rows = []
    for (_, prob, spec), by_lib in group_runs.items():
        ref, peer = by_lib.get(REF), by_lib.get(PEER)
        for name in lib_order:
            r = by_lib.get(name)
            if r is None:
                continue
            extra = r.counts.extra
            steps = str(r.counts.n_steps)
            if "mean_sample_steps" in extra:
                steps += f" ({extra['mean_sample_steps']:.1f})"
            row = [prob, spec.label(), name, r.counts.nfe, steps,
                   f"{fmt_ms(r.wall)} ({fmt_ms(r.timing.iqr)})"]
            if with_error:
                row += [fmt_err(r.error),
                        fmt_ratio(_ratio(r.error, ref.error if ref else None)) if ref else ""]
            if with_tfunc:
                row += [f"{r.t_func.median * 1e6:.1f}"]
            row += [
                f"{r.factor:.2f}",
                f"{fmt_us(r.overhead_per_step)} ({fmt_us(r.overhead_noise_per_step)})",
                fmt_ratio(_ratio(r.overhead_per_step, ref.overhead_per_step if ref else None)),
                fmt_ratio(_ratio(r.wall, ref.wall if ref else None)),
                fmt_ratio(_ratio(r.wall, peer.wall if peer else None)),
            ]
            rows.append(row)
    return md_table(headers, rows, right)


def _pairs(by_case: dict[tuple, dict[str, Run]]) -> list[tuple[tuple, Run, Run]]:
    return [(key, v["node"], v[REF]) for key, v in by_case.items() if "node" in v and REF in v]


def _case_name(key: tuple) -> str:
    return f"({key[0]}) {key[1]} {key[2].label()}"


def _is_vdp256(key: tuple) -> bool:
    return key[1].startswith("vdp-b256")


def _wall_target(key: tuple) -> bool:
    """Cases held to the 0.6x wall-time target: Van der Pol batch 256, adaptive (case a)."""
    return _is_vdp256(key) and key[0] == "a"


def _comparison_table(by_case: dict[tuple, dict[str, Run]], clock: str) -> str:
    """node against torchdiffeq, one row per case, with the targets' thresholds."""
    headers = ["case", "nfe node / tdq", "ovh/step node / tdq us", "ratio (<= 0.5)",
               "noise us", f"{clock} ratio", "error ratio"]
    rows = []
    for key, n, t in _pairs(by_case):
        ratio = _ratio(n.overhead_per_step, t.overhead_per_step)
        noise = n.overhead_noise_per_step + t.overhead_noise_per_step
        wall = _ratio(n.wall, t.wall)
        err = _ratio(n.error, t.error) if key[2].method == "dopri8" else None
        rows.append([
            _case_name(key),
            f"{n.counts.nfe} / {t.counts.nfe}" + (" FAIL" if n.counts.nfe > t.counts.nfe else ""),
            f"{fmt_us(n.overhead_per_step)} / {fmt_us(t.overhead_per_step)}",
            fmt_ratio(ratio) + ("" if ratio is not None and ratio <= 0.5 else " FAIL"),
            f"+-{fmt_us(noise)}",
            fmt_ratio(wall) + ((" FAIL" if wall > 0.6 else "") if _wall_target(key) else ""),
            "" if err is None else fmt_ratio(err) + (" FAIL" if err > 0.1 else ""),
        ])
    note = (f"{clock} ratio is checked against 0.6 on the adaptive Van der Pol batch 256 cases "
            "(a) only; error "
            "ratio (dopri8 cases) against 0.1. noise: the two overhead/step IQRs "
            "added; a ratio whose numerator is within noise of half the denominator is not "
            "resolved by this run.")
    return md_table(headers, rows, [False] + [True] * 6) + "\n\n" + note


def _targets(by_case: dict[tuple, dict[str, Run]], clock: str) -> list[Target]:
    pairs = _pairs(by_case)
    targets = []
    # 1. evaluations never above torchdiffeq's
    bad = [f"{_case_name(k)}: {n.counts.nfe} > {t.counts.nfe}" for k, n, t in pairs
           if n.counts.nfe > t.counts.nfe]
    targets.append(Target(
        "function evaluations never above torchdiffeq's (same method and tolerance)",
        None if not pairs else not bad,
        f"{len(pairs) - len(bad)}/{len(pairs)} cases" + (": " + "; ".join(bad) if bad else ""),
    ))
    # 2. overhead per step at most half of torchdiffeq's, every case
    ratios = [(k, _ratio(n.overhead_per_step, t.overhead_per_step), n, t) for k, n, t in pairs]
    bad = [(k, r, n, t) for k, r, n, t in ratios
           if r is None or t.overhead_per_step <= 0 or r > 0.5]
    unresolved = [k for k, r, n, t in ratios if abs(n.overhead_per_step - 0.5 * t.overhead_per_step)
                  < n.overhead_noise_per_step + t.overhead_noise_per_step]
    detail = f"{len(pairs) - len(bad)}/{len(pairs)} cases"
    if bad:
        detail += "; over 0.5: " + ", ".join(f"{_case_name(k)} {fmt_ratio(r)}"
                                             for k, r, _, _ in bad)
    if unresolved:
        detail += f"; {len(unresolved)} case(s) within noise of the threshold"
    targets.append(Target(
        "solver overhead per step at most 0.5x torchdiffeq's on every case",
        None if not pairs else not bad, detail,
    ))
    # 3. wall time on Van der Pol batch 256 at most 0.6x torchdiffeq's: case (a), the adaptive
    # solves. (For fixed-step rk4 on Van der Pol the function evaluations alone take about 0.75
    # of torchdiffeq's wall time, so 0.6 is below the physical limit; (c) is held to the
    # overhead-per-step target instead.)
    vr = [(k, _ratio(n.wall, t.wall)) for k, n, t in pairs if _wall_target(k)]
    bad = [(k, r) for k, r in vr if r is None or r > 0.6]
    detail = "no case"
    if vr:
        lo, hi = min(r for _, r in vr), max(r for _, r in vr)
        detail = f"{len(vr) - len(bad)}/{len(vr)} cases, {clock}-time ratios {lo:.2f}-{hi:.2f}"
    if bad:
        detail += "; over 0.6: " + ", ".join(f"{_case_name(k)} {fmt_ratio(r)}" for k, r in bad)
    targets.append(Target(
        "wall time on Van der Pol batch 256 (case a) at most 0.6x torchdiffeq's",
        None if not vr else not bad, detail,
    ))
    # 4. dopri8 error at output times at most a tenth of torchdiffeq's
    er = [(k, _ratio(n.error, t.error)) for k, n, t in pairs if k[2].method == "dopri8"
          and n.error is not None and t.error is not None]
    bad = [(k, r) for k, r in er if r is None or r > 0.1]
    targets.append(Target(
        "dopri8 error at output times at most 0.1x torchdiffeq's (equal tolerance)",
        None if not er else not bad,
        f"{len(er) - len(bad)}/{len(er)} cases, ratios {min(r for _, r in er):.3f}-"
        f"{max(r for _, r in er):.3f}" if er else "no case",
    ))
    return targets


def _reference_check() -> str:
    """Compare the Van der Pol reference with one DOP853 solve per sample at 1e-12."""
    prob = P.van_der_pol(batch=256, n_out=50)
    batch_ref = prob.reference()
    per_sample = P.vdp_reference(1.0, prob.y0, prob.t, per_sample=True, tol=1e-12)
    diff = float((batch_ref - per_sample).abs().max())
    return (f"Van der Pol reference check: max |batched DOP853 at {P.REFERENCE_TOL:g} - "
            f"per-sample DOP853 at 1e-12| = {diff:.1e} over the 50 output times")


GROUP_TITLES = {
    "a": "(a) Van der Pol, batch 256, float64, adaptive",
    "b": "(b) Neural ODE (MLP), batch 512, float32, rtol = atol = 1e-5, t in [0, 1]",
    "c": "(c) Fixed-step rk4 (3/8 rule), 100 steps",
    "d": "(d) dopri8 accuracy at 50 output times",
}


def run(config: BenchConfig, log=print) -> SuiteResult:
    torch.set_num_threads(1)
    libs, notes = load_libraries()
    lib_order = [lib.name for lib in libs]
    cases, problems = _cases(config)

    result = SuiteResult("Forward solves: solver overhead and accuracy")
    result.notes += notes

    log("computing references ...")
    for prob in problems:
        if prob.reference is not None:
            prob.reference()
    if not config.quick:
        result.notes.append(_reference_check())

    runs: list[Run] = []
    for case in cases:
        runs += _measure_case(case, libs, config, log)

    by_case = _by_case(runs)
    for group, title in GROUP_TITLES.items():
        part = {k: v for k, v in by_case.items() if k[0] == group}
        if not part:
            continue
        with_error = any(r.error is not None for v in part.values() for r in v.values())
        result.sections.append(
            (title, _table(part, lib_order, with_error, with_tfunc=True, clock=config.clock)))

    result.sections.append(
        ("node against torchdiffeq, per case", _comparison_table(by_case, config.clock)))
    result.targets = _targets(by_case, config.clock)
    result.records = [r.record() for r in runs]
    result.versions = {lib.name: lib.version() for lib in libs}
    for prob in problems:
        line = f"`{prob.name}`: {prob.description}"
        if prob.reference_name:
            line += f"; reference: {prob.reference_name}"
        result.setup.append(line)
    return result
