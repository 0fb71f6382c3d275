"""Stiff problems: node's implicit methods against SciPy's Radau, BDF and LSODA (issue 16).

Usage (from the repository root)::

    .venv/bin/python -m bench.stiff            # prints a Markdown table, writes
                                               # bench/stiff_results.json
    .venv/bin/python -m bench.stiff --quick    # one timed run per solve, batch of 32

It is also a suite (``run(config, log) -> SuiteResult``) that ``bench.run_all`` can list.

What is measured, per problem of :mod:`bench.stiff_problems` (each at its own ``rtol``/``atol``,
the same for every solver):

* **steps**: step attempts (accepted + rejected) where the solver reports them (node); SciPy
  reports accepted steps only (the length of its output grid), shown as "accepted".
* **nfe**: calls of the vector field, *including* those spent on finite-difference Jacobians:
  SciPy's ``nfev`` leaves those out for Radau and BDF (their FD Jacobian is ``n`` extra calls per
  Jacobian), so ``nfev + n * njev`` is reported for them; LSODA's ``nfev`` (ODEPACK's NFE)
  already counts them. With ``jac=analytic`` SciPy gets the Jacobian in closed form and nfe is
  its ``nfev``. node's counts are its own ``stats``: with ``jac=autograd`` each Jacobian costs
  one counted ``func`` evaluation (its vector-Jacobian products reuse that graph), with
  ``jac=analytic`` (``options["jacobian"]`` the problem's closed-form Jacobian) none.
* **Jacobians**, **LU**: Jacobian evaluations and LU factorisations (SciPy ``njev``/``nlu``;
  node's stats keys, whichever of the names in :data:`JAC_KEYS`/:data:`LU_KEYS` it reports).
* **rel. error**: ``max_i |y_i - ref_i| / (|ref_i| + atol_i)`` at the end against the reference
  (:func:`bench.stiff_problems.relative_error`).
* **cpu s**: median CPU time of the calling thread (``time.thread_time``) over the timed runs
  (3, or 1 with ``--quick`` or for a solve over a second; after one untimed warm-up solve),
  single-threaded (``torch.set_num_threads(1)``), whatever ``--clock`` ``run_all`` was given.
* node rows: ``kvaerno5`` and ``kvaerno3`` with the Jacobian from autograd (``"dense"``) and the
  analytic one, and ``kvaerno5`` with ``jacobian_reuse=0.1`` (the Jacobian kept across steps
  while Newton contracts fast; off by default).

A method node does not have (yet) is listed with a note instead of numbers, so the script runs
against any version of node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.common import BenchConfig, SuiteResult, Target
from bench.report import md_table
from bench.stiff_problems import (
    ROBER_1E5,
    ROBER_K,
    problems,
    relative_error,
    rober_numpy,
    rober_torch,
    rober_torch_jac,
)

HERE = Path(__file__).resolve().parent
PROG = ".venv/bin/python -m bench.stiff"
NODE_METHODS = ("kvaerno5", "kvaerno3")
SCIPY_METHODS = ("Radau", "BDF", "LSODA")
JAC_KEYS = ("n_jacobians", "n_jac", "njev")
LU_KEYS = ("n_lu", "n_lu_decompositions", "nlu")
NEWTON_KEYS = ("n_newton", "n_newton_iterations")
BATCH = 256
BATCH_SEED = 16
EXPLICIT_BUDGET = 20000  # dopri5's step budget on ROBER, for contrast (2000 with --quick)
REUSE = 0.1  # jacobian_reuse of the reuse rows
LONG = 1.0  # seconds: a solve at least this long is timed once
HEADERS = ["problem", "solver", "jac", "steps", "accepted", "nfe", "Jacobians", "LU",
           "rel. error", "cpu s", "note"]


def _cpu(fn, runs: int):
    """``(result of the last run, median CPU seconds over runs)``; a solve taking longer than
    :data:`LONG` seconds is timed once (its relative noise is small; it keeps the full run near
    two minutes)."""
    times, result = [], None
    for _ in range(runs):
        start = time.thread_time()
        result = fn()
        times.append(time.thread_time() - start)
        if times[-1] > LONG:
            break
    return result, statistics.median(times)


def _first(stats: dict, keys) -> int | None:
    for k in keys:
        if k in stats:
            return int(stats[k])
    return None


def node_has(method: str) -> bool:
    import node

    return method in node.available_methods() or method == "scipy_solver"


def _record(problem, solver, jac, steps, accepted, nfe, njev, nlu, error, cpu, note="",
            **extra):
    return dict(problem=problem, solver=solver, jac=jac, steps=steps, accepted=accepted, nfe=nfe,
                jacobians=njev, lu=nlu, rel_error=error, cpu_s=cpu, note=note, **extra)


def run_node(p, method: str, runs: int, options: dict | None = None, label: str | None = None):
    """One node solve of problem ``p`` (``method`` may be ``scipy_solver``)."""
    import node

    label = label or f"node {method}"
    if not node_has(method):
        return _record(p.name, label, "", None, None, None, None, None, None, None,
                       f"method {method!r} not in this node (skipped)")
    y0 = p.y0_tensor()
    t = torch.tensor([0.0, p.t_end], dtype=torch.float64)
    atol = torch.tensor(p.atol, dtype=torch.float64) if isinstance(p.atol, tuple) else p.atol
    options = dict(options or {})

    def solve():
        with torch.no_grad():
            return node.solve(p.torch_f, y0, t, method=method, rtol=p.rtol, atol=atol,
                              options=options, on_failure="return")

    sol, cpu = _cpu(solve, runs)
    stats = sol.stats
    jac = options.get("jacobian", options.get("solver", ""))
    jac = "analytic" if callable(jac) else "autograd" if jac in ("dense", "batch") else str(jac)
    if options.get("jacobian_reuse"):
        jac += f", reuse {options['jacobian_reuse']:g}"
    note = "" if sol.success else _failure_note(sol)
    error = relative_error(sol.ys[-1].numpy(), p.reference, p.atol) if sol.success else None
    njev = _first(stats, JAC_KEYS)
    return _record(p.name, label, jac,
                   stats.get("n_steps") if method != "scipy_solver" else None,
                   stats.get("n_accepted"), stats.get("nfe"), njev, _first(stats, LU_KEYS),
                   error, cpu, note, newton=_first(stats, NEWTON_KEYS))


def run_scipy(p, method: str, runs: int, analytic_jac: bool = False):
    from scipy.integrate import solve_ivp

    jac = p.numpy_jac if analytic_jac else None

    def solve():
        return solve_ivp(p.numpy_f, (0.0, p.t_end), np.array(p.y0), method=method, rtol=p.rtol,
                         atol=np.array(p.atol) if isinstance(p.atol, tuple) else p.atol, jac=jac)

    sol, cpu = _cpu(solve, runs)
    nfe = int(sol.nfev)
    if jac is None and method in ("Radau", "BDF"):
        nfe += p.n * int(sol.njev)  # their FD Jacobians are not in nfev (module docstring)
    error = relative_error(sol.y[:, -1], p.reference, p.atol) if sol.success else None
    return _record(p.name, f"scipy {method}", "analytic" if analytic_jac else "FD", None,
                   len(sol.t) - 1, nfe, int(sol.njev), int(sol.nlu), error, cpu,
                   "" if sol.success else f"failed: {sol.message}")


def batch_problem(batch: int):
    """``batch`` ROBER problems with ``k1 = 0.04 * U[0.5, 2]`` (seeded), on [0, 1e5]."""
    gen = torch.Generator().manual_seed(BATCH_SEED)
    k1 = 0.04 * (0.5 + 1.5 * torch.rand(batch, generator=gen, dtype=torch.float64))
    return k1


def run_batch(batch: int, runs: int, log):
    """One batched node kvaerno5 call (``jacobian="batch"``) against SciPy Radau looping."""
    import node

    k1 = batch_problem(batch)
    rtol, atol = 1e-6, (1e-8, 1e-12, 1e-8)
    records = []

    def scipy_loop():
        from scipy.integrate import solve_ivp

        ends, nfe, steps = [], 0, 0
        for k in k1.tolist():
            f = rober_numpy((k, ROBER_K[1], ROBER_K[2]))
            sol = solve_ivp(f, (0.0, 1e5), np.array([1.0, 0.0, 0.0]), method="Radau", rtol=rtol,
                            atol=np.array(atol))
            ends.append(sol.y[:, -1])
            nfe += int(sol.nfev) + 3 * int(sol.njev)
            steps += len(sol.t) - 1
        return np.array(ends), nfe, steps

    log(f"   batch: SciPy Radau loop over {batch} problems")
    (ends_scipy, nfe, steps), cpu_scipy = _cpu(scipy_loop, 1)
    records.append(dict(case=f"ROBER batch {batch}", solver="scipy Radau, loop", nfe=nfe,
                        accepted=steps, cpu_s=cpu_scipy, note="FD Jacobian; nfe incl. 3*njev"))
    if not node_has("kvaerno5"):
        records.append(dict(case=f"ROBER batch {batch}", solver="node kvaerno5 batch",
                            note="method 'kvaerno5' not in this node (skipped)"))
        return records, None
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(batch, 3).contiguous()
    # per-sample k1 as a [B] tensor, broadcasting against y[..., 0] ([B]) in the field
    rates = (k1, ROBER_K[1], ROBER_K[2])
    f = rober_torch(rates)
    t = torch.tensor([0.0, 1e5], dtype=torch.float64)
    ratio = None
    for jac, label in (("batch", "jacobian='batch' (autograd)"),
                       (rober_torch_jac(rates), "analytic [B, 3, 3] jacobian")):
        def node_batch(jac=jac):
            with torch.no_grad():
                return node.solve(f, y0, t, method="kvaerno5", rtol=rtol,
                                  atol=torch.tensor(atol, dtype=torch.float64),
                                  options=dict(jacobian=jac), on_failure="return")

        log(f"   batch: node kvaerno5, one batched call, {label}")
        sol, cpu_node = _cpu(node_batch, runs)
        rec = dict(case=f"ROBER batch {batch}", solver=f"node kvaerno5, {label}",
                   steps=sol.stats.get("n_steps"), accepted=sol.stats.get("n_accepted"),
                   nfe=sol.stats.get("nfe"), cpu_s=cpu_node,
                   jacobians=_first(sol.stats, JAC_KEYS), lu=_first(sol.stats, LU_KEYS),
                   note="" if sol.success else _failure_note(sol))
        if sol.success:
            diff = np.abs(sol.ys[-1].numpy() - ends_scipy) / (np.abs(ends_scipy) + np.array(atol))
            rec["max_rel_diff_vs_scipy"] = float(diff.max())
            rec["ratio_vs_scipy_loop"] = cpu_node / cpu_scipy
            rec["note"] = f"{cpu_node / cpu_scipy:.3f} x SciPy's loop"
            if jac == "batch":
                ratio = cpu_node / cpu_scipy
        records.append(rec)
    return records, ratio


def _failure_note(sol) -> str:
    """A failed node solve in a few words: where it stopped, and whether it was diagnosed stiff."""
    where = sol.message.split("; ")[1] if "; " in sol.message else sol.message
    stiff = "; diagnosed: appears stiff" if "appears stiff" in sol.message else ""
    return f"failed ({sol.status}): {where.split(' after')[0]}{stiff}"


def _fmt(v, kind=""):
    if v is None:
        return ""
    if kind == "err":
        return f"{v:.2e}"
    if kind == "s":
        return f"{v:.3f}"
    return str(v)


def table(records) -> str:
    rows = [[r["problem"], r["solver"], r["jac"], _fmt(r["steps"]), _fmt(r["accepted"]),
             _fmt(r["nfe"]), _fmt(r["jacobians"]), _fmt(r["lu"]), _fmt(r["rel_error"], "err"),
             _fmt(r["cpu_s"], "s"), r["note"]] for r in records]
    return md_table(HEADERS, rows, right=[False, False, False] + [True] * 7 + [False])


def batch_table(records) -> str:
    headers = ["case", "solver", "steps", "accepted", "nfe", "Jacobians", "LU", "cpu s",
               "max rel. diff vs SciPy", "note"]
    rows = [[r["case"], r["solver"], _fmt(r.get("steps")), _fmt(r.get("accepted")),
             _fmt(r.get("nfe")), _fmt(r.get("jacobians")), _fmt(r.get("lu")),
             _fmt(r.get("cpu_s"), "s"), _fmt(r.get("max_rel_diff_vs_scipy"), "err"),
             r.get("note", "")] for r in records]
    return md_table(headers, rows, right=[False, False] + [True] * 7 + [False])


def _warm_up() -> None:
    """One small untimed solve, so that no timed run pays for first-call costs."""
    import node

    p = problems()[0]
    if node_has("kvaerno5"):
        with torch.no_grad():
            node.solve(p.torch_f, p.y0_tensor(), torch.tensor([0.0, 1.0], dtype=torch.float64),
                       method="kvaerno5", rtol=1e-4, atol=1e-8)


def run(config: BenchConfig, log) -> SuiteResult:
    torch.set_num_threads(1)
    runs = 1 if config.quick else 3
    budget = 2000 if config.quick else EXPLICIT_BUDGET
    _warm_up()
    records = []
    for p in problems():
        log(f"== {p.name}")
        for method in NODE_METHODS:
            records.append(run_node(p, method, runs, dict(jacobian="dense")))
            records.append(run_node(p, method, runs, dict(jacobian=p.torch_jac)))
        records.append(run_node(p, "kvaerno5", runs,
                                dict(jacobian=p.torch_jac, jacobian_reuse=REUSE)))
        records.append(run_node(p, "scipy_solver", runs, dict(solver="Radau"),
                                label="node scipy_solver"))
        for method in SCIPY_METHODS:
            records.append(run_scipy(p, method, runs))
        records.append(run_scipy(p, "Radau", runs, analytic_jac=True))
        if p.reference is ROBER_1E5:
            # Contrast: an explicit method, with a budget so that it ends quickly.
            records.append(run_node(p, "dopri5", 1, dict(max_num_steps=budget),
                                    label=f"node dopri5 (budget {budget})"))
    batch = 32 if config.quick else BATCH
    batch_records, ratio = run_batch(batch, runs, log)

    result = SuiteResult(title="Stiff problems: node against SciPy", issue=16)
    result.setup = [f"`{p.name}`: {p.description}, t in [0, {p.t_end:g}], rtol = {p.rtol:g}, "
                    f"atol = {p.atol}; reference: {p.reference_source}" for p in problems()]
    result.setup.append(f"batch: {batch} ROBER problems, k1 = 0.04 * U[0.5, 2] (seed "
                        f"{BATCH_SEED}), t in [0, 1e5], rtol 1e-6, atol (1e-8, 1e-12, 1e-8)")
    result.sections = [("One problem per solve", table(records)),
                       (f"A batch of {batch} ROBER problems", batch_table(batch_records))]
    result.records = records + batch_records
    result.targets = _targets(records, ratio, batch)
    result.notes = [
        "nfe includes finite-difference Jacobian calls: SciPy Radau/BDF as nfev + n * njev, "
        "LSODA's nfev counts them itself; with jac=analytic no FD calls are made.",
        "SciPy reports accepted steps only; node's steps include rejected ones.",
    ]
    return result


def _targets(records, ratio, batch) -> list[Target]:
    def find(problem, solver):
        return next((r for r in records if r["problem"] == problem and r["solver"] == solver),
                    None)

    name = problems()[0].name  # ROBER [0, 1e5]
    k5 = next((r for r in records if r["problem"] == name and r["solver"] == "node kvaerno5"
               and r["jac"] == "autograd"), None)
    radau = find(name, "scipy Radau")
    if k5 is None or k5["steps"] is None or radau is None:
        steps_target = Target("kvaerno5 on ROBER [0, 1e5]: steps <= SciPy Radau's, rel. error "
                              "<= 1e-3", None, "kvaerno5 not available")
    else:
        ok = k5["steps"] <= radau["accepted"] and (k5["rel_error"] or 1.0) <= 1e-3
        steps_target = Target("kvaerno5 on ROBER [0, 1e5]: steps <= SciPy Radau's, rel. error "
                              "<= 1e-3", ok, f"{k5['steps']} vs {radau['accepted']} steps, "
                              f"error {_fmt(k5['rel_error'], 'err')}")
    batch_target = Target(f"batch of {batch} ROBER: one node kvaerno5 call (jacobian='batch') "
                          "cpu <= 0.1x SciPy Radau loop",
                          None if ratio is None else ratio <= 0.1,
                          "kvaerno5 not available" if ratio is None else f"ratio {ratio:.3f}")
    return [steps_target, batch_target]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run per solve, batch of 32")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the raw records (default: bench/stiff_results.json "
                             "for a full run, nothing for --quick)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    config = BenchConfig.make(args.quick, "cpu")
    json_path = args.json or (None if args.quick else HERE / "stiff_results.json")
    if args.no_write:
        json_path = None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = run(config, log)
    lines = [f"## {result.title}", ""]
    lines += [f"* {s}" for s in result.setup] + [""]
    for title, text in result.sections:
        lines += [f"### {title}", "", text, ""]
    lines += ["Targets:", ""] + [f"* {t.mark}: {t.name} ({t.detail})" for t in result.targets]
    lines += ["", "Notes:", ""] + [f"* {n}" for n in result.notes]
    print("\n".join(lines))
    if json_path is not None:
        payload = {result.title: {"records": result.records,
                                  "targets": [t.__dict__ for t in result.targets]}}
        json_path.write_text(json.dumps(payload, indent=1))
        log(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
