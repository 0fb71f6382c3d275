"""The checkpoint gradient mode's taped replay (node.checkpoint) and its fallback.

Checkpoint and direct mode differentiate the same computation, so their gradients agree to
rounding in every situation the replay must reproduce: FSAL stage reuse, jumps, fixed grids with
perturbation and interpolated outputs, tuple states, reverse time, partial solves, gradients of
gradients, closures and torch.func.functional_call.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import node
from tests.problems import frozen_steps


class Field(torch.nn.Module):
    """``tanh(W [y, t] + b)`` scaled by a parameter: a small time-dependent vector field."""

    def __init__(self, dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(dim + 1, dim).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(self.lin.weight.shape, generator=gen))
            self.lin.bias.copy_(torch.randn(self.lin.bias.shape, generator=gen))
        self.scale = torch.nn.Parameter(torch.tensor(0.8, dtype=torch.float64))

    def forward(self, t, y):
        tt = t.to(y.dtype).expand(*y.shape[:-1], 1)
        return self.scale * torch.tanh(self.lin(torch.cat([y, tt], dim=-1)))


class TupleField(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Field()

    def forward(self, t, state):
        y, _ = state
        dy = self.inner(t, y)
        return dy, (dy**2).sum(-1)


def _gradients(mode, func, y0, t, **kw):
    sol = node.solve(func, y0, t, gradient=mode, **kw)
    ys = sol.ys if isinstance(sol.ys, torch.Tensor) else torch.cat(
        [p.reshape(len(sol.ts), -1) for p in sol.ys], dim=1)
    loss = (ys**2).sum() + ys[-1].sin().sum()
    states = y0 if isinstance(y0, tuple) else (y0,)
    inputs = [x for x in (*states, t, *func.parameters()) if x.requires_grad]
    return torch.autograd.grad(loss, inputs), sol


def _assert_modes_agree(func, y0, t, **kw):
    direct, _ = _gradients("direct", func, y0, t, **kw)
    checkpoint, sol = _gradients("checkpoint", func, y0, t, **kw)
    for d, c in zip(direct, checkpoint, strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-12)
    return sol


def _inputs(n=4, t_end=2.0, n_t=6, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    y0 = torch.randn(n, 2, generator=gen, dtype=dtype).requires_grad_(True)
    t = torch.linspace(0.0, t_end, n_t, dtype=dtype).requires_grad_(True)
    return y0, t


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3", "adaptive_heun"])
def test_taped_replay_matches_direct(method):
    y0, t = _inputs()
    # adaptive_heun (second order) would take 9421 steps at 1e-8; 945 at 1e-6 exercise as much.
    tol = 1e-6 if method == "adaptive_heun" else 1e-8
    sol = _assert_modes_agree(Field(), y0, t, method=method, rtol=tol, atol=tol)
    assert "nfe_backward" in sol.stats  # the taped path ran (the fallback does not count)


def test_backward_evaluates_each_accepted_stage_once():
    y0, _ = _inputs()
    t = torch.linspace(0.0, 2.0, 6, dtype=torch.float64)
    func = Field()
    sol = node.solve(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-6, gradient="checkpoint")
    sol.ys.sum().backward()
    # dopri5 has 7 stages; the first is reused from the step before (FSAL) except at the start,
    # and rejected steps are not replayed.
    assert sol.stats["n_rejected"] >= 0
    assert sol.stats["nfe_backward"] == 6 * sol.stats["n_accepted"] + 1


def test_jumps_and_step_times():
    y0, t = _inputs()
    _assert_modes_agree(Field(), y0, t, method="dopri5", rtol=1e-8, atol=1e-8,
                        options=dict(jump_t=torch.tensor([0.55, 1.3]),
                                     step_t=torch.tensor([0.9])))


@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("method", ["rk4", "midpoint", "euler"])
def test_fixed_grid_with_outputs_between_grid_points(method, perturb):
    y0, t = _inputs(n_t=7)
    sol = _assert_modes_agree(Field(), y0, t, method=method,
                              options=dict(step_size=0.15, perturb=perturb))
    assert "nfe_backward" in sol.stats


def test_fixed_grid_cubic_interpolation_falls_back():
    y0, t = _inputs(n_t=7)
    sol = _assert_modes_agree(Field(), y0, t, method="rk4",
                              options=dict(step_size=0.15, interp="cubic"))
    assert "nfe_backward" not in sol.stats


def test_tuple_state_and_reverse_time():
    y0, _ = _inputs()
    q0 = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(1.5, -0.5, 5, dtype=torch.float64, requires_grad=True)
    _assert_modes_agree(TupleField(), (y0, q0), t, method="dopri5", rtol=1e-9, atol=1e-9)


def test_partial_solution_on_failure_still_differentiates():
    y0, t = _inputs(t_end=3.0)
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-9, options=dict(max_num_steps=12),
              on_failure="return")
    direct, sol_d = _gradients("direct", Field(), y0, t, **kw)
    checkpoint, sol_c = _gradients("checkpoint", Field(), y0, t, **kw)
    assert not sol_c.success and len(sol_c.ts) == len(sol_d.ts) < len(t)
    for d, c in zip(direct, checkpoint, strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-12)


def test_double_backward_matches_direct():
    y0, t = _inputs()

    def hvp(mode):
        func = Field()
        ys = node.solve(func, y0, t, rtol=1e-9, atol=1e-9, gradient=mode).ys
        (g,) = torch.autograd.grad((ys**3).sum(), y0, create_graph=True)
        return torch.autograd.grad((g * g).sum(), [y0, *func.parameters()])

    for d, c in zip(hvp("direct"), hvp("checkpoint"), strict=True):
        torch.testing.assert_close(c, d, rtol=1e-10, atol=1e-11)


def test_gradcheck_parameters_through_functional_call():
    """Under functional_call the module's own parameters are back before backward() runs: the
    replay must use the tensors the forward pass used."""
    func = Field()
    names = [n for n, _ in func.named_parameters()]
    y0, _ = _inputs(n=2)
    y0 = y0.detach()
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)

    class Solve(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.func = func

        def forward(self, y):
            # Pinned steps: finite differences must not move the steps (test_solver_gradients).
            return node.solve(self.func, y, t, gradient="checkpoint", **frozen_steps(0.15)).ys

    solver = Solve()

    def fn(*ps):
        return functional_call(solver, {f"func.{n}": p for n, p in zip(names, ps, strict=True)},
                               (y0,))

    ps = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())
    assert torch.autograd.gradcheck(fn, ps, atol=1e-8, rtol=1e-6)


class ClosureField(torch.nn.Module):
    """A module that also reads a tensor it does not own (a conditioning input)."""

    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        self.inner = Field()
        self.context = context

    def forward(self, t, y):
        return self.inner(t, y) * self.context


def test_leaves_outside_the_module_are_found_and_differentiated():
    y0, t = _inputs()
    context = torch.tensor([1.2, 0.7], dtype=torch.float64, requires_grad=True)
    results = {}
    for mode in ("direct", "checkpoint"):
        func = ClosureField(context)
        sol = node.solve(func, y0, t, rtol=1e-9, atol=1e-9, gradient=mode)
        results[mode] = torch.autograd.grad(sol.ys.square().sum(), [context, y0])
        if mode == "checkpoint":
            assert "nfe_backward" not in sol.stats  # fell back to per-step checkpointing
    for d, c in zip(results["direct"], results["checkpoint"], strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-12)


def test_parameter_computed_outside_func_is_differentiated_at_every_step():
    """A non-leaf tensor built from a parameter outside ``func`` sits in every step's graph."""
    y0, t = _inputs()
    base = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    class Owner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.inner = Field()

        def forward(self, t, y):
            return self.inner(t, y) * self.gain

    results = {}
    for mode in ("direct", "checkpoint"):
        func = Owner()
        func.gain = base.exp()  # computed once per solve, outside func
        sol = node.solve(func, y0, t, rtol=1e-9, atol=1e-9, gradient=mode)
        results[mode] = torch.autograd.grad(sol.ys.square().sum(), [base, y0])
    for d, c in zip(results["direct"], results["checkpoint"], strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-12)


def test_saved_tensors_do_not_grow_with_the_number_of_steps():
    """What autograd keeps for the taped solve (y0, the parameters) is flat in the number of
    steps; the direct mode's graph grows with it."""
    y0, _ = _inputs(n=64)

    def saved(mode, t_end):
        total = 0

        def pack(x):
            nonlocal total
            total += x.numel()
            return x

        t = torch.linspace(0.0, t_end, 3, dtype=torch.float64)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            sol = node.solve(Field(), y0, t, rtol=1e-7, atol=1e-7, gradient=mode,
                             options=dict(max_step=0.1))
        assert sol.stats["n_accepted"] >= 10 * t_end
        return total

    assert saved("checkpoint", 1.0) == saved("checkpoint", 10.0)
    assert saved("direct", 10.0) > 5 * saved("direct", 1.0)


class TraceField(torch.nn.Module):
    """A CNF-like field: ``(f(y), -tr df/dy)`` with the trace from vector-Jacobian products
    taken inside ``func``, on a leaf it makes when the state does not require gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Field()

    def forward(self, t, state):
        x, _ = state
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            f = self.inner(t, x)
            trace = sum(
                torch.autograd.grad(f[:, i].sum(), x, create_graph=create_graph,
                                    retain_graph=True)[0][:, i]
                for i in range(x.shape[1])
            )
        out = (f, -trace)
        return out if create_graph else tuple(o.detach() for o in out)


def test_func_with_its_own_vector_jacobian_products():
    """The forward pass costs no more evaluations than the direct mode's (the replay is not
    triggered by func's own autograd calls) and the gradients agree."""
    x0 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    state = (x0, torch.zeros(6, dtype=torch.float64))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    func = TraceField()
    sols = {}
    grads = {}
    for mode in ("direct", "checkpoint"):
        sol = node.solve(func, state, t, rtol=1e-8, atol=1e-8, gradient=mode)
        loss = sol.ys[0][-1].square().sum() + sol.ys[1][-1].sum()
        grads[mode] = torch.autograd.grad(loss, list(func.parameters()))
        sols[mode] = sol
    assert sols["checkpoint"].stats["nfe"] == sols["direct"].stats["nfe"]
    assert "nfe_backward" in sols["checkpoint"].stats
    for d, c in zip(grads["direct"], grads["checkpoint"], strict=True):
        torch.testing.assert_close(c, d, rtol=1e-10, atol=1e-12)
