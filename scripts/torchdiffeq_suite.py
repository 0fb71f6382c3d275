"""Run torchdiffeq's own unit tests (and, optionally, its examples) against ``node``.

Usage::

    python scripts/torchdiffeq_suite.py /path/to/torchdiffeq [--examples] [--only MODULE ...]
        [--timeout SECONDS] [--no-upstream] [--verbose] [--json OUT.json]

``/path/to/torchdiffeq`` is a checkout of https://github.com/rtqichen/torchdiffeq (master); its
``tests/*_tests.py`` are run unchanged. A throw-away package named ``torchdiffeq`` that only
re-exports ``node.odeint``, ``node.odeint_adjoint`` and ``node.odeint_event`` is written to a
temporary directory placed first on ``PYTHONPATH`` of a subprocess, so the real torchdiffeq (if
installed) is shadowed and never imported. Each test file runs in its own subprocess with a result
object that records every ``subTest`` outcome (unittest-style subtests are reported poorly by
pytest).

Every failure is classified:

(a) ``missing-method``: a torchdiffeq method that node does not provide (the method list comes
    from the checkout's ``tests/problems.py`` minus :func:`node.available_methods`);
(b) ``private-grad-fn``: the test reads torchdiffeq's private autograd node
    (``ys.grad_fn.adjoint_options``);
(c) ``other``: everything else -- these are the compatibility bugs; all of them must pass;
(u) ``upstream``: a (c) failure that the checkout's own torchdiffeq fails in the same way on this
    machine (the modules with (c) failures are run a second time against the real package to
    find these; e.g. TestMinMaxStep's LSODA check, which SciPy >= 1.15 no longer honours).

With ``--examples`` the example scripts (ode_demo, latent_ode, cnf, bouncing_ball, learn_physics;
not odenet_mnist, which downloads MNIST) also run unchanged, shortened through their own
command-line arguments, in a temporary working directory; a non-zero exit counts as (c).

The exit status is 1 iff a (c) failure (or an example failure, crash or timeout) occurred. The
script needs the checkout, so CI does not run it; it lives outside ``tests/`` so pytest does not
collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

SHIM = '''"""Stand-in for torchdiffeq that runs node (written by scripts/torchdiffeq_suite.py)."""

from node import odeint, odeint_adjoint, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]
'''

# (name, script, argument variants). Arguments shorten each run; variants cover adjoint flags.
EXAMPLES = [
    ("ode_demo", "ode_demo.py", [["--niters", "4", "--test_freq", "2"],
                                 ["--niters", "4", "--test_freq", "2", "--adjoint"]]),
    ("latent_ode", "latent_ode.py", [["--niters", "2", "--adjoint", "False", "--visualize", "True"],
                                     ["--niters", "2", "--adjoint", "True"]]),
    ("cnf", "cnf.py", [["--niters", "2", "--num_samples", "64"],
                       ["--niters", "2", "--num_samples", "64", "--adjoint"]]),
    # bouncing_ball parses --adjoint but its __main__ does not use it; both run anyway.
    ("bouncing_ball", "bouncing_ball.py", [["3"], ["3", "--adjoint"]]),
    ("learn_physics", "learn_physics.py", [["--num_iterations", "2", "--save", "figs"],
                                           ["--num_iterations", "2", "--save", "figs",
                                            "--no_events"]]),
]

PASS, FAIL, ERROR, SKIP = "pass", "fail", "error", "skip"
CAT_A, CAT_B, CAT_C = "(a) missing-method", "(b) private-grad-fn", "(c) other"
CAT_U = "(u) upstream"
REFERENCE_FLAG = "TORCHDIFFEQ_SUITE_REFERENCE"  # the worker runs the checkout's own torchdiffeq


# --------------------------------------------------------------------------------------------
# Worker: runs inside the subprocess, one test module, appending JSON lines to a file.
# --------------------------------------------------------------------------------------------


class _RecordingResult(unittest.TestResult):
    """Writes one JSON line per test / subtest outcome as soon as it is known (so a timeout
    keeps everything recorded before it)."""

    def __init__(self, out, tests_dir: str):
        super().__init__()
        self._out = out
        self._tests_dir = os.path.realpath(tests_dir)

    def _write(self, test, params, outcome, err=None):
        rec = {"test": test.id(), "params": params, "outcome": outcome}
        if err is not None:
            exc_type, exc, tb = err
            rec["message"] = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            rec["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))
            rec["test_line"] = self._innermost_test_line(tb)
        self._out.write(json.dumps(rec) + "\n")
        self._out.flush()

    def _innermost_test_line(self, tb) -> str:
        """Source of the innermost frame that lies in the checkout's tests directory: tells
        whether the failing statement is the test's own (e.g. a ``grad_fn`` access)."""
        line = ""
        for frame in traceback.extract_tb(tb):
            if os.path.realpath(frame.filename).startswith(self._tests_dir):
                line = f"{Path(frame.filename).name}:{frame.lineno}: {frame.line}"
        return line

    def addSuccess(self, test):  # unittest API name
        self._write(test, None, PASS)

    def addFailure(self, test, err):
        self._write(test, None, FAIL, err)

    def addError(self, test, err):
        self._write(test, None, ERROR, err)

    def addSkip(self, test, reason):
        self._write(test, None, SKIP)

    def addSubTest(self, test, subtest, err):
        params = {k: str(v) for k, v in subtest.params.items()}
        if err is None:
            self._write(test, params, PASS)
        else:
            outcome = FAIL if issubclass(err[0], test.failureException) else ERROR
            self._write(test, params, outcome, err)


def _worker(tests_dir: str, module: str, out_path: str) -> None:
    sys.path.insert(0, tests_dir)
    import torchdiffeq  # noqa: F401  (the shim, or the checkout's package; checked below)

    if os.environ.get(REFERENCE_FLAG):
        real = Path(torchdiffeq.__file__).resolve()
        if Path(tests_dir).resolve().parent not in real.parents:
            raise SystemExit(f"torchdiffeq resolved to {real}, not the checkout's package")
        with open(out_path, "w") as out:
            out.write(json.dumps({"missing": [], "torchdiffeq": str(real)}) + "\n")
            out.flush()
            suite = unittest.defaultTestLoader.loadTestsFromName(module)
            suite.run(_RecordingResult(out, tests_dir))
        return

    import node

    shim_file = Path(sys.modules["torchdiffeq"].__file__).resolve()
    if shim_file.parent.parent != Path(os.environ["TORCHDIFFEQ_SUITE_SHIM"]).resolve():
        raise SystemExit(f"torchdiffeq resolved to {shim_file}, not the shim")
    import problems  # the checkout's tests/problems.py

    from node.scipy_solver import METHOD as SCIPY_METHOD  # not a tableau, so not listed

    provided = {*node.available_methods(), SCIPY_METHOD}
    missing = sorted(set(problems.METHODS) - provided)
    with open(out_path, "w") as out:
        out.write(json.dumps({"missing": missing, "node": node.__file__}) + "\n")
        out.flush()
        suite = unittest.defaultTestLoader.loadTestsFromName(module)
        suite.run(_RecordingResult(out, tests_dir))


# --------------------------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------------------------


def classify(rec: dict, missing: list[str], upstream: frozenset = frozenset()) -> str:
    """Sort a failed record into (a) missing method, (b) private grad_fn access, (u) failing
    with the real torchdiffeq too (``upstream``: keys of such records), (c) other."""
    params = rec.get("params") or {}
    message = rec.get("message", "")
    if params.get("method") in missing or any(f"'{m}'" in message for m in missing):
        return CAT_A
    if "grad_fn" in rec.get("test_line", ""):
        return CAT_B
    if record_key(rec) in upstream:
        return CAT_U
    return CAT_C


def record_key(rec: dict) -> tuple:
    """A test outcome's identity across runs: the test and its subtest parameters."""
    return rec["test"], tuple(sorted((rec.get("params") or {}).items()))


def _env(shim_dir: Path, reference: Path | None = None) -> dict[str, str]:
    """The worker's environment: the shim first on the path, or (``reference``, a checkout) the
    checkout's own torchdiffeq."""
    env = dict(os.environ)
    env.pop(REFERENCE_FLAG, None)
    if reference is not None:
        env[REFERENCE_FLAG] = "1"
    paths = [str(reference)] if reference is not None else [str(shim_dir), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["TORCHDIFFEQ_SUITE_SHIM"] = str(shim_dir)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_module(module: str, tests_dir: Path, shim_dir: Path, work: Path, timeout: float,
               reference: Path | None = None):
    """Run one test module in a subprocess (against node, or with ``reference`` against that
    checkout's own torchdiffeq); return (header, records, crash message or None)."""
    out_path = work / f"{module}{'.reference' if reference else ''}.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", str(tests_dir), module,
           str(out_path)]
    crash = None
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tests_dir, env=_env(shim_dir, reference),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            crash = f"worker exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    except subprocess.TimeoutExpired:
        crash = f"timed out after {timeout:.0f}s (records before that are kept)"
    header, records = {}, []
    if out_path.exists():
        lines = [json.loads(s) for s in out_path.read_text().splitlines() if s.strip()]
        if lines:
            header, records = lines[0], lines[1:]
    label = f"{module} (torchdiffeq itself)" if reference else module
    print(f"  {label}: {len(records)} outcomes in {time.monotonic() - start:.0f}s"
          + (f"  [{crash.splitlines()[0]}]" if crash else ""), flush=True)
    return header, records, crash


def _short(message: str, width: int = 160) -> str:
    message = " ".join(message.split())
    return message if len(message) <= width else message[: width - 3] + "..."


def _params_str(params) -> str:
    if not params:
        return "(test body)"
    return ", ".join(f"{k}={v.replace('torch.', '')}" for k, v in params.items())


def _print_groups(recs) -> None:
    """One entry per (test, message with quoted names and numbers blanked): count, the values
    the subtest parameters took, one example message and the failing test line."""
    groups = defaultdict(list)
    for rec in recs:
        key = re.sub(r"'[^']*'", "'_'", rec.get("message", ""))
        key = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", key)
        groups[(rec["test"], _short(key, 120))].append(rec)
    for (test, _), group in sorted(groups.items()):
        first = group[0]
        print(f"  {len(group):4}x {test}: {_short(first.get('message', ''))}")
        values = defaultdict(set)
        for rec in group:
            for k, v in (rec["params"] or {"": "(test body)"}).items():
                values[k].add(v.replace("torch.", ""))
        print("        params: " + "; ".join(f"{k}={','.join(sorted(v))}" if k else next(iter(v))
                                          for k, v in values.items()))
        if first.get("test_line"):
            print(f"        at {_short(first['test_line'])}")


def report_tests(all_records, missing, verbose: bool, upstream: frozenset = frozenset()) -> int:
    """Print the per-test table and the failure lists; return the number of (c) failures."""
    print(f"\nnode lacks these torchdiffeq methods (category a): {', '.join(missing)}\n")
    per_test = defaultdict(Counter)
    failures = defaultdict(list)
    for rec in all_records:
        if rec["outcome"] in (FAIL, ERROR):
            rec["category"] = classify(rec, missing, upstream)
            per_test[rec["test"]][rec["category"]] += 1
            failures[rec["category"]].append(rec)
        else:
            per_test[rec["test"]][rec["outcome"]] += 1
    cols = [PASS, SKIP, CAT_A, CAT_B, CAT_U, CAT_C]
    name_w = max([len(t) for t in per_test] + [4])
    print(f"{'test':<{name_w}}  " + "  ".join(f"{c:>8}" for c in ("pass", "skip", "(a)", "(b)",
                                                                      "(u)", "(c)")))
    for test in sorted(per_test):
        print(f"{test:<{name_w}}  " + "  ".join(f"{per_test[test][c]:>8}" for c in cols))
    totals = Counter()
    for counts in per_test.values():
        totals.update(counts)
    print(f"{'TOTAL':<{name_w}}  " + "  ".join(f"{totals[c]:>8}" for c in cols))

    for cat in (CAT_A, CAT_B, CAT_U, CAT_C):
        recs = failures.get(cat, [])
        if not recs:
            continue
        print(f"\n{cat} failures ({len(recs)}), grouped by test and message:")
        _print_groups(recs)
        if verbose:
            print(f"\n{cat} failures, one by one:")
            for rec in recs:
                print(f"  {rec['outcome'].upper():5} {rec['test']} [{_params_str(rec['params'])}]")
                print(f"        {_short(rec.get('message', ''))}")
                if rec.get("test_line"):
                    print(f"        at {_short(rec['test_line'])}")
    # A failure outside any subTest ends that test method, so whatever it would have checked
    # afterwards is unknown (e.g. TestMinMaxStep stops at scipy_solver before dopri5 min_step=2).
    cut_short = sorted({r["test"] for recs in failures.values() for r in recs if not r["params"]})
    if cut_short:
        print("\nstopped early by a failure outside a subTest (later checks did not run): "
              + ", ".join(cut_short))
    if verbose:
        print("\npassed:")
        for rec in all_records:
            if rec["outcome"] == PASS:
                print(f"  PASS  {rec['test']} [{_params_str(rec['params'])}]")
    return totals[CAT_C]


def run_examples(checkout: Path, shim_dir: Path, timeout: float) -> list[dict]:
    results = []
    for name, script, variants in EXAMPLES:
        path = checkout / "examples" / script
        for args in variants:
            with tempfile.TemporaryDirectory(prefix=f"tdq-{name}-") as cwd:
                start = time.monotonic()
                try:
                    proc = subprocess.run([sys.executable, str(path), *args], cwd=cwd,
                                          env=_env(shim_dir), capture_output=True, text=True,
                                          timeout=timeout)
                    ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr).strip()
                    # Success: the script's own last output line; failure: the error line.
                    last = (proc.stdout if ok else proc.stderr).strip()
                except subprocess.TimeoutExpired:
                    ok, tail = False, f"timed out after {timeout:.0f}s"
                    last = tail
            last = last.splitlines()[-1] if last else ""
            rec = {"example": name, "args": args, "ok": ok, "seconds": time.monotonic() - start,
                   "last_line": last, "output_tail": tail[-3000:]}
            results.append(rec)
            status = "ok  " if ok else "FAIL"
            print(f"  {status} {name} {' '.join(args)}  ({rec['seconds']:.0f}s)  {_short(last)}",
                  flush=True)
    return results


def reference_failures(records, missing, checkout: Path, tests_dir: Path, shim_dir: Path,
                       work: Path, timeout: float) -> frozenset:
    """Keys of the (c) failures that the checkout's own torchdiffeq also fails: the modules with
    such failures run once more against the real package."""
    candidates = {record_key(r) for r in records
                  if r["outcome"] in (FAIL, ERROR) and classify(r, missing) == CAT_C}
    modules = sorted({key[0].split(".")[0] for key in candidates})
    failing = set()
    for module in modules:
        _, ref_records, _ = run_module(module, tests_dir, shim_dir, work, timeout,
                                       reference=checkout)
        failing |= {record_key(r) for r in ref_records if r["outcome"] in (FAIL, ERROR)}
    return frozenset(candidates & failing)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="path to a torchdiffeq checkout")
    parser.add_argument("--examples", action="store_true", help="also run the example scripts")
    parser.add_argument("--only", nargs="+", metavar="MODULE",
                        help="test modules to run, e.g. event_tests (default: all *_tests.py)")
    parser.add_argument("--no-tests", action="store_true", help="skip the unit tests")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds per test module / example run (default 3600)")
    parser.add_argument("--no-upstream", action="store_true",
                        help="do not rerun the modules with (c) failures against the real "
                             "torchdiffeq (fast; upstream failures then count as (c))")
    parser.add_argument("--verbose", action="store_true",
                        help="also list (a)/(b) failures and every passed subtest")
    parser.add_argument("--json", type=Path, help="write all records (with tracebacks) here")
    args = parser.parse_args(argv)

    checkout = args.checkout.resolve()
    tests_dir = checkout / "tests"
    if not (tests_dir / "problems.py").is_file():
        parser.error(f"checkout: expected a torchdiffeq checkout with tests/problems.py, "
                     f"got {args.checkout}")
    modules = args.only or sorted(p.stem for p in tests_dir.glob("*_tests.py"))

    n_bad = 0
    dump = {"tests": [], "crashes": {}, "examples": []}
    with tempfile.TemporaryDirectory(prefix="tdq-shim-") as tmp:
        tmp = Path(tmp)
        shim_dir = tmp / "shim"
        (shim_dir / "torchdiffeq").mkdir(parents=True)
        (shim_dir / "torchdiffeq" / "__init__.py").write_text(SHIM)

        if not args.no_tests:
            print(f"running {len(modules)} torchdiffeq test modules from {tests_dir}", flush=True)
            missing = []
            for module in modules:
                header, records, crash = run_module(module, tests_dir, shim_dir, tmp,
                                                    args.timeout)
                missing = header.get("missing", missing)
                dump["tests"].extend(records)
                if crash:
                    dump["crashes"][module] = crash
            upstream = frozenset() if args.no_upstream else reference_failures(
                dump["tests"], missing, checkout, tests_dir, shim_dir, tmp, args.timeout)
            n_bad += report_tests(dump["tests"], missing, args.verbose, upstream)
            for module, crash in dump["crashes"].items():
                print(f"\n(c) CRASH {module}: {crash}")
                n_bad += 1

        if args.examples:
            print("\nexamples (unchanged, `import torchdiffeq` -> node):", flush=True)
            dump["examples"] = run_examples(checkout, shim_dir, args.timeout)
            for rec in dump["examples"]:
                if not rec["ok"]:
                    n_bad += 1
                    print(f"\n--- {rec['example']} {' '.join(rec['args'])} output tail ---\n"
                          f"{rec['output_tail']}")

    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))
    print(f"\n{'FAILED' if n_bad else 'OK'}: {n_bad} category-(c) failures / crashes / "
          f"failed examples")
    return 1 if n_bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_worker":
        _worker(*sys.argv[2:])
    else:
        sys.exit(main())
