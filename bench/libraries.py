"""One adapter per library: how to run a solve, and how to count its work.

Timed runs call each library exactly as a user would, with nothing wrapped around ``func``.
Counting is done in a separate, untimed run of the same (deterministic) solve:

* node reports ``nfe`` and ``n_steps`` itself (``node.solve(...).stats``);
* torchdiffeq has no statistics: ``func`` is wrapped in a call counter, and its step function
  (``rk_common._runge_kutta_step`` for adaptive methods, the fixed-grid solver's ``_step_func``)
  is patched with a counter for the duration of the counting run;
* torchode counts per sample (``stats["n_f_evals"]``, ``stats["n_steps"]``). It steps the whole
  batch together, every sample with its own step size, until the last sample is done; every
  ``func`` call evaluates the whole batch, and ``n_f_evals`` is incremented for every sample on
  every call, so all its entries are equal. We report ``nfe`` = that number (calls of ``func`` on
  the whole batch, comparable to the other libraries' nfe) and ``n_steps`` = the number of loop
  iterations = ``max(stats["n_steps"])``; the per-sample mean of ``n_steps`` is kept as extra
  information.

Every ``run`` returns the solution as a ``[len(t), batch, features]`` tensor.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.problems import Problem


@dataclass(frozen=True)
class SolveSpec:
    """What to solve with: an adaptive method with tolerances, or a fixed number of steps."""

    method: str
    rtol: float | None = None
    atol: float | None = None
    steps: int | None = None  # fixed grid: this many equal steps from t[0] to t[-1]

    @property
    def fixed(self) -> bool:
        return self.steps is not None

    def label(self) -> str:
        if self.fixed:
            return f"{self.method} {self.steps} steps"
        if self.rtol == self.atol:
            return f"{self.method} tol={self.rtol:g}"
        return f"{self.method} rtol={self.rtol:g} atol={self.atol:g}"


@dataclass
class Counts:
    nfe: int
    n_steps: int
    extra: dict = field(default_factory=dict)


def step_size(problem: Problem, steps: int) -> float:
    return float(problem.t[-1] - problem.t[0]) / steps


class Library:
    """Base class of the adapters."""

    name = ""
    methods: frozenset[str] = frozenset()

    def version(self) -> str:
        raise NotImplementedError

    def available(self) -> bool:
        return True

    def supports(self, spec: SolveSpec) -> bool:
        return spec.method in self.methods

    def runner(self, problem: Problem, spec: SolveSpec) -> Callable[[], torch.Tensor]:
        """A no-argument callable that solves once and returns ``[T, B, F]`` outputs."""
        raise NotImplementedError

    def counted(self, problem: Problem, spec: SolveSpec) -> tuple[Counts, torch.Tensor]:
        """Solve once (untimed) and return the work counters and the outputs."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------


class NodeLib(Library):
    name = "node"

    def __init__(self) -> None:
        import node

        self.node = node
        self.methods = frozenset(node.available_methods())

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("node")
        except PackageNotFoundError:
            return "workspace"

    def _kwargs(self, problem: Problem, spec: SolveSpec) -> dict:
        if spec.fixed:
            return {"method": spec.method, "options": {"step_size": step_size(problem, spec.steps)}}
        return {"method": spec.method, "rtol": spec.rtol, "atol": spec.atol}

    def runner(self, problem, spec):
        solve, func, y0, t = self.node.solve, problem.func, problem.y0, problem.t
        kw = self._kwargs(problem, spec)
        return lambda: solve(func, y0, t, **kw).ys

    def counted(self, problem, spec):
        sol = self.node.solve(problem.func, problem.y0, problem.t, **self._kwargs(problem, spec))
        st = sol.stats
        return Counts(st["nfe"], st["n_steps"], {"n_rejected": st["n_rejected"]}), sol.ys


# --------------------------------------------------------------------------------------------


class _CallCounter(torch.nn.Module):
    def __init__(self, func: Callable) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


class TorchdiffeqLib(Library):
    name = "torchdiffeq"

    def __init__(self) -> None:
        import torchdiffeq
        from torchdiffeq._impl.odeint import SOLVERS

        self.torchdiffeq = torchdiffeq
        self.solvers = SOLVERS
        self.methods = frozenset(SOLVERS) - {"scipy_solver", "implicit_adams", "explicit_adams",
                                             "fixed_adams"}

    def version(self) -> str:
        return self.torchdiffeq.__version__

    def available(self) -> bool:
        return importlib.util.find_spec("torchdiffeq") is not None

    def _kwargs(self, problem, spec):
        if spec.fixed:
            return {"method": spec.method, "options": {"step_size": step_size(problem, spec.steps)}}
        return {"method": spec.method, "rtol": spec.rtol, "atol": spec.atol}

    def runner(self, problem, spec):
        odeint, func, y0, t = self.torchdiffeq.odeint, problem.func, problem.y0, problem.t
        kw = self._kwargs(problem, spec)
        return lambda: odeint(func, y0, t, **kw)

    @contextlib.contextmanager
    def _count_steps(self, spec: SolveSpec):
        counter = {"steps": 0}
        if spec.fixed:
            owner, attr = self.solvers[spec.method], "_step_func"
        else:
            from torchdiffeq._impl import rk_common

            owner, attr = rk_common, "_runge_kutta_step"
        original = getattr(owner, attr)

        def counting(*args, **kwargs):
            counter["steps"] += 1
            return original(*args, **kwargs)

        setattr(owner, attr, counting)
        try:
            yield counter
        finally:
            setattr(owner, attr, original)

    def counted(self, problem, spec):
        func = _CallCounter(problem.func)
        with self._count_steps(spec) as counter:
            ys = self.torchdiffeq.odeint(func, problem.y0, problem.t, **self._kwargs(problem, spec))
        return Counts(func.calls, counter["steps"]), ys


# --------------------------------------------------------------------------------------------


class TorchodeLib(Library):
    """torchode, eager. (``torch.compile(solver).solve`` compiles only ``forward``, so ``solve``
    runs eagerly anyway; ``torch.jit.script`` of the solver fails under torch 2.13.)"""

    name = "torchode"

    def __init__(self) -> None:
        import torchode

        self.to = torchode
        self.methods = frozenset({"dopri5", "tsit5", "rk4"})

    def version(self) -> str:
        return self.to.__version__

    def available(self) -> bool:
        return importlib.util.find_spec("torchode") is not None

    def _solver(self, problem: Problem, spec: SolveSpec, with_stats: bool):
        to = self.to
        term = to.ODETerm(problem.func, with_stats=with_stats)
        if spec.fixed:
            step = _rk4_38(to)(term)
            controller = to.FixedStepController()
        else:
            step = {"dopri5": to.Dopri5, "tsit5": to.Tsit5}[spec.method](term=term)
            controller = to.IntegralController(atol=spec.atol, rtol=spec.rtol, term=term)
        adjoint = to.AutoDiffAdjoint(step, controller)
        y0, t = problem.y0, problem.t
        batch = y0.shape[0]
        dt0 = None
        if spec.fixed:
            dt0 = torch.full((batch,), step_size(problem, spec.steps), dtype=t.dtype,
                             device=t.device)
        IVP = to.InitialValueProblem

        def run():
            ivp = IVP(y0, t_eval=t.expand(batch, -1))
            return adjoint.solve(ivp, dt0=dt0)

        return run

    def runner(self, problem, spec):
        run = self._solver(problem, spec, with_stats=False)
        return lambda: run().ys.transpose(0, 1)

    def counted(self, problem, spec):
        sol = self._solver(problem, spec, with_stats=True)()
        st = sol.stats
        nfe = st["n_f_evals"]
        if int(nfe.max()) != int(nfe.min()):
            raise RuntimeError("torchode's n_f_evals differs between samples; update the adapter")
        steps = st["n_steps"]
        status = sol.status
        if bool((status != 0).any()):
            raise RuntimeError(f"torchode solve failed with status {status.unique().tolist()}")
        extra = {"mean_sample_steps": float(steps.double().mean()),
                 "min_sample_steps": int(steps.min())}
        return Counts(int(nfe.max()), int(steps.max()), extra), sol.ys.transpose(0, 1)


_RK4_CLASS = None


def _rk4_38(to):
    """torchode has no rk4: torchdiffeq's 3/8-rule rk4 built from torchode's own generic
    ``ExplicitRungeKutta`` (zero error weights, linear interpolation between steps)."""
    global _RK4_CLASS
    if _RK4_CLASS is None:
        from torchode.interpolation import LinearInterpolation
        from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta

        tableau = ButcherTableau.from_lists(
            c=[0.0, 1 / 3, 2 / 3, 1.0],
            a=[[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]],
            b=[1 / 8, 3 / 8, 3 / 8, 1 / 8],
            b_err=[0.0, 0.0, 0.0, 0.0],
        )

        class RK4(ExplicitRungeKutta):
            def __init__(self, term=None):
                super().__init__(term, tableau)

            def convergence_order(self):
                return 4

            def build_interpolation(self, data):
                return LinearInterpolation(data.t0, data.dt, data.y0, data.y1)

        _RK4_CLASS = RK4
    return _RK4_CLASS


LIBRARY_CLASSES: tuple[type[Library], ...] = (NodeLib, TorchdiffeqLib, TorchodeLib)


def load_libraries() -> tuple[list[Library], list[str]]:
    """The libraries that import, and notes on those that do not."""
    libs, notes = [], []
    for cls in LIBRARY_CLASSES:
        try:
            libs.append(cls())
        except ImportError as exc:
            notes.append(f"{cls.name} not available ({exc}); its columns are empty")
    return libs, notes
