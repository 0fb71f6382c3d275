"""Gradient benchmark: forward plus backward of a neural ODE (issue 3, "Benchmark").

One problem, the MLP neural ODE of :mod:`bench.problems` (2-64-64-2, tanh, batch 512, float32),
on ``t = linspace(0, T, 11)`` for T in {1, 10, 50} (T in {1, 10} with ``--quick``), dopri5 at
rtol = atol = 1e-5. The loss is the sum of squares of the outputs at the 10 output times after
``t[0]``; one sample is the solve plus ``torch.autograd.grad(loss, parameters)``.

Variants: node's three gradient modes (``direct``, ``checkpoint``, ``adjoint``) and the adjoint
with ``adjoint_options=dict(norm="seminorm")``; torchdiffeq's ``odeint``, ``odeint_adjoint`` and
``odeint_adjoint`` with the seminorm. For each (T, variant):

* time: median of repeated forward+backward samples, all variants of one T timed round-robin
  (:func:`bench.timing.measure_interleaved` with ``no_grad=False``);
* forward / backward evaluations: calls of a counting ``nn.Module`` wrapped around the vector
  field, during the solve and during the backward pass (the same count for every library; a
  separate, untimed run);
* peak memory: ``ru_maxrss`` of a fresh child process (``python -m bench.gradients --child
  memory ...``) that builds the problem, runs one forward+backward and reports its peak resident
  set, and its resident set just before the solve (the baseline: interpreter, torch, the problem
  and one warm-up autograd pass);
* gradient error: max over the parameter tensors of ``max|g - g_ref| / max|g_ref|`` against node's
  direct mode in float64 at rtol = atol = 1e-10 (computed in a child process, ``--child
  reference``, because its graph takes a few GB).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench import problems as P
from bench.common import BenchConfig, SuiteResult, Target
from bench.report import fmt_ms, fmt_ratio, md_table
from bench.timing import Timing, measure_interleaved

TITLE = "Gradients: forward plus backward of a neural ODE"
DIMS = (2, 64, 64, 2)
BATCH = 512
N_OUT = 11  # t = linspace(0, T, 11): t[0] and 10 output times
METHOD = "dopri5"
TOL = 1e-5
REF_TOL = 1e-10
T_FULL = (1.0, 10.0, 50.0)
T_QUICK = (1.0,)
T_TARGET = 50.0  # the checkpoint-against-direct targets are stated at T = 50
ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m bench.run_all --suite bench.gradients --clock cpu"

Solver = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict | None]]


def _node(**kw) -> Solver:
    def solve(func, y0, t, tol=TOL):
        import node

        sol = node.solve(func, y0, t, method=METHOD, rtol=tol, atol=tol, **kw)
        return sol.ys, sol.stats

    return solve


def _tdq(adjoint: bool, **kw) -> Solver:
    def solve(func, y0, t, tol=TOL):
        import torchdiffeq

        odeint = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        return odeint(func, y0, t, method=METHOD, rtol=tol, atol=tol, **kw), None

    return solve


SEMINORM = {"adjoint_options": {"norm": "seminorm"}}


@dataclass(frozen=True)
class Variant:
    key: str
    library: str
    label: str
    solve: Solver = field(compare=False, repr=False)


VARIANTS: tuple[Variant, ...] = (
    Variant("node-direct", "node", "node direct", _node(gradient="direct")),
    Variant("node-checkpoint", "node", "node checkpoint", _node(gradient="checkpoint")),
    Variant("node-adjoint", "node", "node adjoint", _node(gradient="adjoint")),
    Variant("node-adjoint-seminorm", "node", "node adjoint + seminorm",
            _node(gradient="adjoint", **SEMINORM)),
    Variant("tdq-odeint", "torchdiffeq", "torchdiffeq odeint", _tdq(False)),
    Variant("tdq-adjoint", "torchdiffeq", "torchdiffeq odeint_adjoint", _tdq(True)),
    Variant("tdq-adjoint-seminorm", "torchdiffeq", "torchdiffeq odeint_adjoint + seminorm",
            _tdq(True, **SEMINORM)),
)
BY_KEY = {v.key: v for v in VARIANTS}
# node's adjoint variants and the torchdiffeq variant each is compared with
ADJOINT_PAIRS = (("node-adjoint", "tdq-adjoint"),
                 ("node-adjoint-seminorm", "tdq-adjoint-seminorm"))


def problem(t_end: float) -> P.Problem:
    return P.neural_ode(DIMS, BATCH, t_end=t_end, n_out=N_OUT)


def loss_of(ys: torch.Tensor) -> torch.Tensor:
    return ys[1:].pow(2).sum()


def forward_backward(variant: Variant, func: nn.Module, y0, t, params, tol=TOL):
    ys, stats = variant.solve(func, y0, t, tol)
    grads = torch.autograd.grad(loss_of(ys), params)
    return grads, stats


class CallCounter(nn.Module):
    """Counts the calls of the wrapped vector field (its parameters stay the module's)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


@dataclass
class Count:
    nfe_forward: int
    nfe_backward: int
    grads: tuple[torch.Tensor, ...]
    stats: dict | None  # node's own statistics


def counted(variant: Variant, prob: P.Problem) -> Count:
    counter = CallCounter(prob.func)
    params = tuple(prob.func.parameters())
    ys, stats = variant.solve(counter, prob.y0, prob.t)
    nfe_forward = counter.calls
    grads = torch.autograd.grad(loss_of(ys), params)
    return Count(nfe_forward, counter.calls - nfe_forward, tuple(g.detach() for g in grads),
                 None if stats is None else dict(stats))


def relative_error(grads, ref) -> float:
    """Max over the tensors of ``max|g - ref| / max|ref|`` (in float64)."""
    return max(float((g.double() - r.double()).abs().max() / r.double().abs().max())
               for g, r in zip(grads, ref, strict=True))


# --------------------------------------------------------------------------------------------
# Child processes


def _proc_status_bytes(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """Peak resident set of this process: ``VmHWM`` (the high-water mark of its address space).

    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux keeps it across fork and
    exec, so a child started by a big parent reports at least the parent's peak."""
    try:
        return _proc_status_bytes("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def _rss_bytes() -> int:
    try:
        return _proc_status_bytes("VmRSS")
    except (OSError, RuntimeError):
        return _peak_rss_bytes()


def _child_memory(t_end: float, key: str) -> dict:
    # imported here so that they count in the baseline, not in the solve
    import torch.utils.checkpoint  # noqa: F401
    import torchdiffeq  # noqa: F401

    import node  # noqa: F401

    variant = BY_KEY[key]
    prob = problem(t_end)
    params = tuple(prob.func.parameters())
    # Warm-up: the same variant on 2 samples over a short interval. The first checkpointed or
    # adjoint solve of a process makes torch import torch._dynamo / sympy (tens of MiB, once per
    # process); that belongs to the baseline, not to the memory a solve of this size takes.
    forward_backward(variant, prob.func, prob.y0[:2], torch.linspace(0.0, 0.01, 3), params)
    startup_peak = _peak_rss_bytes()
    reset = _reset_peak()
    baseline = _rss_bytes() if reset else startup_peak
    forward_backward(variant, prob.func, prob.y0, prob.t, params)
    peak = _peak_rss_bytes()
    return {"baseline_bytes": baseline, "peak_bytes": max(peak, startup_peak),
            "solve_peak_bytes": peak, "peak_reset": reset}


def _child_reference(t_end: float, out: str) -> dict:
    prob = problem(t_end)
    func = copy.deepcopy(prob.func).double()
    params = tuple(func.parameters())
    grads, stats = forward_backward(BY_KEY["node-direct"], func, prob.y0.double(),
                                    prob.t.double(), params, tol=REF_TOL)
    torch.save([g.detach() for g in grads], out)
    return {"stats": stats, "peak_bytes": _peak_rss_bytes()}


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.gradients", "--child", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gradients",
                                     description="child processes of the gradient benchmark "
                                                 "(run the suite with python -m bench.run_all "
                                                 "--suite bench.gradients)")
    parser.add_argument("--child", choices=("memory", "reference"), required=True)
    parser.add_argument("--t-end", type=float, required=True)
    parser.add_argument("--variant", choices=tuple(BY_KEY))
    parser.add_argument("--out", help="file for the reference gradients (torch.save)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.child == "memory":
        if args.variant is None:
            parser.error("--child memory needs --variant")
        result = _child_memory(args.t_end, args.variant)
    else:
        if args.out is None:
            parser.error("--child reference needs --out")
        result = _child_reference(args.t_end, args.out)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------
# The suite


@dataclass
class Row:
    t_end: float
    variant: Variant
    count: Count
    timing: Timing
    memory: dict
    error: float

    @property
    def time(self) -> float:
        return self.timing.median

    @property
    def peak_mib(self) -> float:
        return self.memory["peak_bytes"] / 2**20

    @property
    def solve_mib(self) -> float:
        """Peak resident set during the solve above the child's baseline: the memory it took."""
        return (self.memory["solve_peak_bytes"] - self.memory["baseline_bytes"]) / 2**20

    @property
    def backward_ratio(self) -> float:
        return self.count.nfe_backward / self.count.nfe_forward

    def record(self) -> dict:
        st = self.count.stats or {}
        return {
            "t_end": self.t_end, "variant": self.variant.key, "library": self.variant.library,
            "method": METHOD, "rtol": TOL, "atol": TOL, "batch": BATCH, "n_out": N_OUT,
            "nfe_forward": self.count.nfe_forward, "nfe_backward": self.count.nfe_backward,
            "node_stats": st, "clock": self.timing.clock,
            "time_s_median": self.time, "time_s_iqr": self.timing.iqr,
            "time_samples_s": list(self.timing.samples),
            "wall_samples_s": list(self.timing.wall), "cpu_samples_s": list(self.timing.cpu),
            **self.memory, "grad_rel_error": self.error,
        }


def _measure_t(t_end: float, config: BenchConfig, log) -> tuple[list[Row], dict]:
    prob = problem(t_end)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ref.pt")
        ref_info = _run_child(["reference", "--t-end", repr(t_end), "--out", out])
        ref = torch.load(out)
    log(f"  T={t_end:g}: reference nfe={ref_info['stats']['nfe']} "
        f"peak RSS {ref_info['peak_bytes'] / 2**20:.0f} MiB")

    counts = {v.key: counted(v, prob) for v in VARIANTS}
    memory = {}
    for v in VARIANTS:
        memory[v.key] = _run_child(["memory", "--t-end", repr(t_end), "--variant", v.key])

    params = tuple(prob.func.parameters())
    fns = {v.key: (lambda v=v: forward_backward(v, prob.func, prob.y0, prob.t, params))
           for v in VARIANTS}
    # The counting run above already ran every variant once: one warm-up round is enough.
    timings = measure_interleaved(fns, repeats=config.repeats, warmup=min(config.warmup, 1),
                                  min_time=config.min_time, max_repeats=config.max_repeats,
                                  no_grad=False)
    rows = []
    for v in VARIANTS:
        c = counts[v.key]
        row = Row(t_end, v, c, timings[v.key].on(config.clock), memory[v.key],
                  relative_error(c.grads, ref))
        rows.append(row)
        log(f"  T={t_end:<4g} {v.label:<38} {config.clock}={fmt_ms(row.time)} ms "
            f"nfe fwd={c.nfe_forward} bwd={c.nfe_backward} ({row.backward_ratio:.2f}x) "
            f"peak={row.peak_mib:.0f} MiB (+{row.solve_mib:.0f}) err={row.error:.2e}")
    return rows, ref_info


def _check_node_counts(rows: list[Row]) -> list[str]:
    """Cross-check the counting wrapper against node's own statistics."""
    notes = []
    for r in rows:
        st = r.count.stats
        if not st:
            continue
        if st.get("nfe") != r.count.nfe_forward:
            notes.append(f"T={r.t_end:g} {r.variant.label}: node reports nfe={st.get('nfe')}, "
                         f"the wrapper counted {r.count.nfe_forward}")
        if "nfe_backward" in st and st["nfe_backward"] != r.count.nfe_backward:
            notes.append(f"T={r.t_end:g} {r.variant.label}: node reports nfe_backward="
                         f"{st['nfe_backward']}, the wrapper counted {r.count.nfe_backward}")
    return notes


def _table(rows: list[Row], clock: str) -> str:
    headers = ["T", "variant", f"{clock} ms (IQR)", "/ node direct", "nfe fwd", "nfe bwd",
               "bwd / fwd", "steps fwd / bwd", "peak RSS MiB", "solve MiB", "grad rel. error"]
    right = [True, False] + [True] * 9
    out = []
    direct = {r.t_end: r for r in rows if r.variant.key == "node-direct"}
    for r in rows:
        st = r.count.stats or {}
        steps = ""
        if st:
            steps = str(st.get("n_steps", ""))
            if "n_steps_backward" in st:
                steps += f" / {st['n_steps_backward']}"
        out.append([
            f"{r.t_end:g}", r.variant.label, f"{fmt_ms(r.time)} ({fmt_ms(r.timing.iqr)})",
            fmt_ratio(r.time / direct[r.t_end].time), r.count.nfe_forward,
            r.count.nfe_backward, fmt_ratio(r.backward_ratio), steps,
            f"{r.peak_mib:.0f}", f"{r.solve_mib:.1f}", f"{r.error:.2e}",
        ])
    return md_table(headers, out, right)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


# Error norms of the adjoint's backward solve, on the tuple (t, y, a, *a_params) that node (as
# torchdiffeq) passes to a callable norm: which channel of the augmented state sets the backward
# step size.
CHANNEL_NORMS = (
    ("y, a, params (default)", None),
    ("y, a (seminorm)", "seminorm"),
    ("y only", lambda xs: _rms(xs[1])),
    ("a only", lambda xs: _rms(xs[2])),
)


def _channel_table(t_values) -> str:
    """Backward / forward evaluations of node's adjoint with the error test on each channel."""
    rows = []
    for t_end in t_values:
        prob = problem(t_end)
        row = [f"{t_end:g}"]
        for label, norm in CHANNEL_NORMS:
            options = {} if norm is None else {"adjoint_options": {"norm": norm}}
            c = counted(Variant(label, "node", label, _node(gradient="adjoint", **options)), prob)
            row.append(f"{c.nfe_backward / c.nfe_forward:.2f}")
        rows.append(row)
    headers = ["T"] + [f"bwd / fwd, norm on {label}" for label, _ in CHANNEL_NORMS]
    return md_table(headers, rows, [True] * len(headers))


def _get(rows: list[Row], t_end: float, key: str) -> Row | None:
    for r in rows:
        if r.t_end == t_end and r.variant.key == key:
            return r
    return None


def _targets(rows: list[Row], t_values, clock: str) -> tuple[list[Target], list[str]]:
    targets = []
    extra = []
    # 1. adjoint CPU time at most 0.6x torchdiffeq's odeint_adjoint (issue 14, item 7)
    parts, ok = [], True
    for t_end in t_values:
        for nk, tk in ADJOINT_PAIRS:
            n, t = _get(rows, t_end, nk), _get(rows, t_end, tk)
            ratio = n.time / t.time
            ok &= ratio <= 0.6
            parts.append(f"T={t_end:g}{' seminorm' if 'seminorm' in nk else ''} {ratio:.2f}")
    targets.append(Target(f"adjoint mode at most 0.6x torchdiffeq's odeint_adjoint "
                          f"({clock} time ratio node / torchdiffeq; issue 14)", ok,
                          ", ".join(parts)))
    # 2. adjoint backward evaluations at most 0.75x torchdiffeq's at equal tolerances, in both
    # norms (issue 14, item 7; it replaced a 2x-the-forward target that no error-controlled
    # adjoint reaches)
    parts, ok = [], True
    for t_end in t_values:
        for nk, tk in ADJOINT_PAIRS:
            n, t = _get(rows, t_end, nk), _get(rows, t_end, tk)
            ratio = n.count.nfe_backward / t.count.nfe_backward
            ok &= ratio <= 0.75
            parts.append(f"T={t_end:g}{' seminorm' if 'seminorm' in nk else ''} {ratio:.2f} "
                         f"({n.count.nfe_backward} / {t.count.nfe_backward})")
    targets.append(Target("adjoint backward evaluations at most 0.75x torchdiffeq's (node / "
                          "torchdiffeq, counts in parentheses; issue 14)", ok, ", ".join(parts)))
    # 3. seminorm never more backward evaluations than without
    parts, ok = [], True
    for t_end in t_values:
        n, s = _get(rows, t_end, "node-adjoint"), _get(rows, t_end, "node-adjoint-seminorm")
        td, ts = _get(rows, t_end, "tdq-adjoint"), _get(rows, t_end, "tdq-adjoint-seminorm")
        ok &= s.count.nfe_backward <= n.count.nfe_backward
        parts.append(f"T={t_end:g} {s.count.nfe_backward} <= {n.count.nfe_backward} "
                     f"(torchdiffeq {ts.count.nfe_backward} / {td.count.nfe_backward})")
    targets.append(Target("seminorm never more backward evaluations than without (node)", ok,
                          ", ".join(parts)))
    # 4./5. checkpoint against direct at T = 50: time, memory
    c, d = _get(rows, T_TARGET, "node-checkpoint"), _get(rows, T_TARGET, "node-direct")
    others = ", ".join(
        f"T={t:g} {_get(rows, t, 'node-checkpoint').time / _get(rows, t, 'node-direct').time:.2f}"
        for t in t_values if t != T_TARGET)
    if c is None:
        targets.append(Target(f"checkpoint time at most 1.5x direct's at T={T_TARGET:g}", None,
                              f"T={T_TARGET:g} not run (--quick); other T: {others}"))
        targets.append(Target(f"checkpoint peak memory at most 1/3 of direct's at "
                              f"T={T_TARGET:g}", None, f"T={T_TARGET:g} not run (--quick)"))
    else:
        ratio = c.time / d.time
        targets.append(Target(
            f"checkpoint {clock} time at most 1.5x direct's at T={T_TARGET:g}", ratio <= 1.5,
            f"T={T_TARGET:g} {ratio:.2f}" + (f" (other T: {others})" if others else "")))
        mem = c.solve_mib / d.solve_mib
        raw = c.peak_mib / d.peak_mib
        targets.append(Target(
            f"checkpoint peak memory at most 1/3 of direct's at T={T_TARGET:g} (memory the "
            "solve takes: peak RSS minus the child's baseline)", mem <= 1 / 3,
            f"{c.solve_mib:.1f} / {d.solve_mib:.1f} MiB = {mem:.3f}; whole-process peak RSS "
            f"{c.peak_mib:.0f} / {d.peak_mib:.0f} MiB = {raw:.2f}"))
        extra.append(
            "Peak memory: a fresh process's peak resident set includes the interpreter, torch "
            f"and the problem (about {d.memory['baseline_bytes'] / 2**20:.0f} MiB for node "
            "direct), and for the checkpoint mode also the modules that "
            "`torch.utils.checkpoint` imports on its first call (`torch._dynamo`, about "
            f"{(c.memory['baseline_bytes'] - d.memory['baseline_bytes']) / 2**20:.0f} MiB more; "
            "the adjoints' first `torch.autograd.grad(..., grad_outputs)` imports sympy, for "
            "both libraries); the memory target is evaluated on the solve's own peak above the "
            "baseline (solve MiB), and the whole-process ratio is shown next to it.")
    # 6. direct and checkpoint gradients agree
    parts, ok = [], True
    for t_end in t_values:
        c, d = _get(rows, t_end, "node-checkpoint"), _get(rows, t_end, "node-direct")
        err = relative_error(c.count.grads, d.count.grads)
        ok &= err <= 1e-6
        parts.append(f"T={t_end:g} {err:.1e}")
    targets.append(Target("direct and checkpoint gradients equal to 1e-6 relative (float32, "
                          "max over parameter tensors of max|diff| / max|g_direct|)", ok,
                          ", ".join(parts)))
    return targets, extra


def run(config: BenchConfig, log=print) -> SuiteResult:
    import torchdiffeq

    torch.set_num_threads(1)
    t_values = T_QUICK if config.quick else T_FULL
    result = SuiteResult(TITLE, issue=3)
    rows: list[Row] = []
    refs = {}
    for t_end in t_values:
        r, refs[t_end] = _measure_t(t_end, config, log)
        rows += r

    result.setup = [
        f"Command: `{COMMAND}` (this section alone; `make bench` runs every suite)"
        + (" -- this was a `--quick` run: T = 1 only, fewer samples" if config.quick
           else ""),
        f"`{problem(1.0).name}`: neural ODE, MLP {'-'.join(map(str, DIMS))} with tanh, float32, "
        f"batch {BATCH}, weights N(0, {P.MLP_GAIN:g}^2/fan_in) (seed {P.MLP_SEED}, the same "
        "field as the forward suite), y0 ~ N(0, I); "
        f"t = linspace(0, T, {N_OUT}), T in {{{', '.join(f'{t:g}' for t in t_values)}}}",
        f"every variant: {METHOD}, rtol = atol = {TOL:g}; loss = sum of squares of the outputs "
        f"at the {N_OUT - 1} output times after t[0]; one sample = solve + "
        "`torch.autograd.grad(loss, parameters)`",
        "reference gradients: node direct mode, float64 (a double copy of the same field and "
        f"y0), {METHOD} at rtol = atol = {REF_TOL:g}: nfe "
        + ", ".join(f"{refs[t]['stats']['nfe']} (T={t:g})" for t in t_values),
    ]
    result.sections.append((f"Forward + backward, batch {BATCH}, float32, {METHOD} "
                            f"rtol = atol = {TOL:g}", _table(rows, config.clock)))
    result.sections.append(("Adjoint backward evaluations by error-norm channel",
                            _channel_table(t_values)))
    result.targets, extra = _targets(rows, t_values, config.clock)
    result.notes += [
        f"time: median over >= {config.repeats} samples of forward + backward on the "
        f"{config.clock} clock, the 7 variants of one T timed round-robin; IQR in parentheses. "
        "/ node direct: time divided by node direct mode's at the same T.",
        "nfe fwd / nfe bwd: calls of a counting `nn.Module` wrapped around the field during the "
        "solve / during the backward pass, in a separate untimed run (the same count for both "
        "libraries). Direct-mode backward passes call no function (autograd replays the graph); "
        "checkpoint mode recomputes each accepted step's stages; the adjoint solves the "
        "augmented system (one vector-Jacobian product per call). steps fwd / bwd: node's own "
        "statistics (`n_steps`, `n_steps_backward`).",
        "peak RSS: peak resident set (`VmHWM` of /proc/self/status) of a fresh child process "
        "(`python -m bench.gradients --child memory --t-end T --variant V`) over its whole "
        "life: it imports everything, builds the problem, runs the same variant once on 2 "
        "samples over [0, 0.01] (warm-up), reads its resident set (the baseline), resets its "
        "peak mark (`/proc/self/clear_refs`) and runs one forward + backward. solve MiB: the "
        "peak during that forward + backward minus the baseline. (`ru_maxrss` is not used: "
        "Linux carries it over fork and exec, so a child reports at least the benchmark "
        "process's own peak.)",
        "error-norm channels: node's adjoint with `adjoint_options=dict(norm=...)` testing the "
        "error of one part of the augmented state (the re-solved state y, its adjoint a, the "
        "parameter adjoints) as an RMS norm, the others ignored. The state alone needs 1.3-1.4x "
        "the forward evaluations (the backward lands on every output time); the adjoint a "
        "needs smaller steps than the forward took (its linear dynamics -a^T df/dy keep their "
        "rates where y settles), and the seminorm count follows it; the default norm, which "
        "also tests each parameter adjoint's RMS (torchdiffeq's norm), takes more.",
        "grad rel. error: max over the parameter tensors of max|g - g_ref| / max|g_ref|; "
        f"dominated by the rtol = atol = {TOL:g} of the float32 solve.",
    ] + extra + _check_node_counts(rows)
    result.records = [r.record() for r in rows]
    result.versions = {"torchdiffeq": torchdiffeq.__version__}
    return result


if __name__ == "__main__":
    sys.exit(child_main())
