"""Run every benchmark suite, print Markdown tables and write ``bench/README.md``.

Usage (from the repository root)::

    make bench                               # = .venv/bin/python -m bench.run_all
    .venv/bin/python -m bench.run_all --quick   # reduced run (about three minutes), writes nothing
    .venv/bin/python -m bench.run_all --suite bench.per_sample --device cuda
                                             # on a GPU: writes bench/README.cuda.md

A suite is a module in :data:`SUITES` with ``run(config: BenchConfig, log) -> SuiteResult``;
one that can run its problems on a GPU lists the device types in ``DEVICES`` (default: CPU only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import BenchConfig, SuiteResult
from bench.report import machine_info, md_table

SUITES = ("bench.solver_overhead", "bench.gradients", "bench.per_sample", "bench.stiff")
# Where each suite's targets are stated, for suites that do not say so themselves.
ISSUES = {"bench.solver_overhead": 2}
PROG = ".venv/bin/python -m bench.run_all"
HERE = Path(__file__).resolve().parent

METHOD_TEXT = """\
## What is measured

* Every library solves the same problem objects (`bench/problems.py`): the same `nn.Module`
  vector field, the same `[batch, features]` initial states, the same output times. Forward-only
  solves run under `torch.no_grad()`, single-threaded (`torch.set_num_threads(1)`).
* **wall**: median over repeated solves (after warm-up runs) of one complete call
  (`node.solve`, `torchdiffeq.odeint`, or torchode's `AutoDiffAdjoint.solve` with a new
  `InitialValueProblem`; torchode's term/method/controller objects are built once, as in a model's
  `__init__`). The libraries are timed round-robin so drifts of the machine affect all alike. The
  IQR of the samples is shown in parentheses.
* **clock**: with `--clock cpu` every time in the tables is the CPU time of the benchmark thread
  (`time.thread_time`) instead of wall time (`time.perf_counter`); single-threaded, the two agree
  on an idle machine, and CPU time leaves out the time spent waiting for a core on a busy one.
  Both are recorded for every sample in `bench/results.json`.
* **nfe**: calls of `func` on the whole batch. **steps**: step attempts (accepted + rejected).
  node reports both itself; for torchdiffeq they are counted in a separate untimed run (a call
  counter around `func`, a counter patched onto its RK step function). torchode controls the step
  size of every sample separately but evaluates `func` on the whole batch on every stage until the
  last sample finishes: its `n_f_evals` is the same for every sample and is reported as nfe, and
  steps = loop iterations = max over samples of its `n_steps`; the per-sample mean of `n_steps`
  is shown in parentheses. torchode is timed with `ODETerm(with_stats=False)`.
* **func call**: time of one `func(t, y0)` call on the full batch: a loop of as many calls as
  the solve makes is one more member of the round-robin, so it is sampled under the same
  conditions as the solves.
* **overhead factor** = wall / (nfe x func call); 1.0 is the physical limit.
* **overhead/step** = (wall - nfe x func call) / steps, in microseconds: everything the solver
  does besides evaluating `func` (stage combinations, error norm, step-size control, dense output,
  setup, amortised over the steps). It is computed per round (each solve sample paired with the
  func-loop sample of the same round) and the median over rounds is shown; in parentheses the
  IQR over rounds. When `func` dominates (large MLP) this is a small difference of two large
  numbers: compare it against its IQR.
* **max error**: max over samples, state components and output times of |y - y_ref|.
* **ratios**: node's (or any library's) value divided by torchdiffeq's / torchode's value for the
  same case, measured in the same run.
* torchdiffeq 0.2.5 has no `tsit5` (its rows are missing); torchode 1.0.1 has no `rk4` or `dopri8`:
  for (c) torchode runs torchdiffeq's 3/8-rule rk4 tableau through torchode's own generic
  `ExplicitRungeKutta` with its `FixedStepController` (accumulating `t + dt` leaves a tiny 101st
  step, which is counted). torchode is run eagerly: its README's `torch.compile(solver)` compiles
  only `forward`, so `.solve` stays eager, and `torch.jit.script` of the solver fails under
  torch 2.13 (internal assert).
* Time tensors: the MLP problems pass float32 `t`; torchdiffeq and torchode then compute times in
  float32, node in float64 (its default `options["dtype"]`). The fields ignore `t`.
* The MLP weights are drawn N(0, 3^2/fan_in): with PyTorch's default initialisation the
  dynamics are so smooth that dopri5 needs only 3 steps on [0, 1], where fixed setup costs
  dominate any per-step figure.
"""


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=HERE, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=HERE, check=True).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _node_digest() -> str:
    """SHA-1 (12 hex digits) of the ``node`` package's sources, to identify uncommitted states."""
    import hashlib

    import node

    root = Path(node.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_suites(names=SUITES):
    return [importlib.import_module(name) for name in names]


def _check_device(parser: argparse.ArgumentParser, args, suites) -> str:
    """The device type of ``--device``, after checking that it exists and that every chosen
    suite can run there (else ``parser.error`` names what is wrong)."""
    try:
        kind = torch.device(args.device).type
    except RuntimeError:
        parser.error(f"--device must be cpu or a CUDA device such as cuda:0, got {args.device!r}")
    if kind == "cpu":
        return kind
    if kind != "cuda" or not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no such device here (torch.cuda.is_available() "
                     f"is {torch.cuda.is_available()})")
    if args.clock != "wall":
        parser.error("--clock cpu measures the CPU thread, not the GPU: use the wall clock "
                     "with --device cuda")
    cpu_only = [s.__name__ for s in suites if kind not in getattr(s, "DEVICES", ("cpu",))]
    if cpu_only:
        parser.error(f"--device {args.device}: suite(s) {', '.join(cpu_only)} run on the CPU "
                     "only; choose suites with --suite (bench.per_sample runs on CUDA)")
    return kind


def render(results: list[SuiteResult], config: BenchConfig, elapsed: float,
           load: tuple[tuple[float, ...], tuple[float, ...]], command: str = "") -> str:
    lines = ["# Benchmarks", ""]
    lines += [
        "Generated by `make bench` (= `.venv/bin/python -m bench.run_all`); do not edit by hand."
        + (f" This file came from `{command}`." if command.strip() != PROG else ""),
        "`.venv/bin/python -m bench.run_all --quick` is a reduced run (about three minutes) that "
        "writes nothing unless given `--output`.",
        "",
        f"Run: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"revision {_git_revision()} (node/ sources sha1 {_node_digest()}), "
        f"{'quick' if config.quick else 'full'} run, "
        f"{elapsed:.0f} s; timing: >= {config.repeats} samples (median), "
        f"{config.warmup} warm-up run(s), at least {config.min_time:g} s sampled per "
        f"measurement; clock: **{config.clock}** "
        + ("(wall time)." if config.clock == "wall" else
           "(CPU time of the benchmark thread, not wall time)."),
        "",
        f"Load average (1 min) before / after the run: {load[0][0]:.2f} / {load[1][0]:.2f} "
        f"on {os.cpu_count()} logical CPUs."
        + ((" **The machine was busy with other work: "
            + ("wall times include waiting for a core; compare ratios measured in the same run, "
               "or rerun with `--clock cpu`.**" if config.clock == "wall" else
               "CPU times exclude waiting for a core but are still inflated by the other work "
               "(shared caches, hypervisor); compare ratios measured in the same run.**"))
           if max(load[0][0], load[1][0]) > 1.5 else ""),
        "",
        "## Machine",
        "",
    ]
    versions: dict[str, str] = {}
    for r in results:
        versions.update(r.versions)
    info = machine_info(config.device) + [(k, v) for k, v in versions.items()]
    lines += [md_table(["", ""], info), ""]

    lines += ["## Targets", ""]
    rows = [(t.mark, "" if r.issue is None else str(r.issue), f"{r.title}: {t.name}", t.detail)
            for r in results for t in r.targets]
    lines += [md_table(["result", "issue", "target", "detail"], rows), ""]

    for r in results:
        lines += [f"## {r.title}", ""]
        if r.setup:
            lines += ["Problems:", ""] + [f"* {s}" for s in r.setup] + [""]
        for title, table in r.sections:
            lines += [f"### {title}", "", table, ""]
        if r.notes:
            lines += ["Notes:", ""] + [f"* {n}" for n in r.notes] + [""]
    lines += [METHOD_TEXT]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="reduced run (fewer cases and repeats, about three minutes)")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown file to write (default: bench/README.md for a full run, "
                             "nothing for --quick)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the raw measurements as JSON (default: "
                             "bench/results.json for a full run)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--suite", action="append", default=None,
                        help="run only this suite module (repeatable), e.g. bench.solver_overhead")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time on the wall clock (default) or on the benchmark thread's CPU "
                             "time (for a machine shared with other work)")
    parser.add_argument("--device", default="cpu",
                        help="where the problems live: cpu (default) or a CUDA device such as "
                             "cuda or cuda:1 (suites that support it; wall clock; writes "
                             "bench/README.cuda.md and bench/results.cuda.json)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 if a target fails")
    args = parser.parse_args(argv)


    suites = load_suites(tuple(args.suite) if args.suite else SUITES)
    kind = _check_device(parser, args, suites)
    torch.set_num_threads(1)
    config = BenchConfig.make(args.quick, args.clock, args.device)
    output, json_path = args.output, args.json
    if not args.quick:
        suffix = "" if kind == "cpu" else f".{kind}"
        output = output or HERE / f"README{suffix}.md"
        json_path = json_path or HERE / f"results{suffix}.json"
    if args.no_write:
        output = json_path = None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    start = time.perf_counter()
    results = []
    for suite in suites:
        log(f"== {suite.__name__}")
        result = suite.run(config, log=log)
        if result.issue is None:
            result.issue = ISSUES.get(suite.__name__)
        results.append(result)
    elapsed = time.perf_counter() - start
    load = (load_before, os.getloadavg())

    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([".venv/bin/python -m bench.run_all", *argv])
    text = render(results, config, elapsed, load, command)
    print(text)
    if output is not None:
        output.write_text(text)
        log(f"wrote {output}")
    if json_path is not None:
        payload = {r.title: {"records": r.records,
                             "targets": [t.__dict__ for t in r.targets]} for r in results}
        json_path.write_text(json.dumps(payload, indent=1))
        log(f"wrote {json_path}")
    failed = any(t.passed is False for r in results for t in r.targets)
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
