"""node.SolverConfig: one validated value for node.solve's arguments, and infinite per-tensor
tolerances (a tensor left out of the error test)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import node

F64 = torch.float64
T = torch.linspace(0.0, 2.0, 5, dtype=F64)


class Decay(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.7, dtype=F64))

    def forward(self, t, y):
        return -self.k * y


def _y0(grad: bool = False):
    return torch.tensor([1.0, 2.0], dtype=F64, requires_grad=grad)


@pytest.mark.parametrize(
    "kwargs,exc_type,words",
    [
        (dict(method="nope"), ValueError, ["method", "nope", "dopri5"]),
        (dict(rtol=-1e-3), ValueError, ["rtol", "-0.001"]),
        (dict(atol=math.inf), ValueError, ["atol", "inf"]),
        (dict(atol=[1e-3, -1.0]), ValueError, ["atol[1]", "-1.0"]),
        (dict(rtol="1e-3"), TypeError, ["rtol", "str"]),
        (dict(rtol=0.0, atol=0.0), ValueError, ["rtol and atol", "0"]),
        (dict(gradient="backprop"), ValueError, ["gradient", "backprop"]),
        (dict(on_failure="ignore"), ValueError, ["on_failure", "ignore"]),
        (dict(options=dict(firststep=0.1)), ValueError, ["firststep", "dopri5"]),
        (dict(options=dict(max_num_steps=0)), ValueError, ["max_num_steps", "0"]),
        (dict(options=3), TypeError, ["options", "int"]),
        (dict(step_size=-0.1, method="rk4"), ValueError, ["step_size", "-0.1"]),
        (dict(step_size=0.0, method="rk4"), ValueError, ["step_size", "0.0"]),
        (dict(max_num_steps=0), ValueError, ["max_num_steps", "0"]),
        (dict(progress=0), ValueError, ["progress", "0"]),
        (dict(step_size=0.1, options=dict(step_size=0.2)), ValueError, ["step_size", "both"]),
        (dict(progress="yes"), TypeError, ["progress", "str"]),
        (dict(adjoint_rtol=1e-3), ValueError, ["adjoint_rtol", "gradient='adjoint'", "direct"]),
        (dict(seminorm=True, gradient="checkpoint"), ValueError, ["seminorm", "checkpoint"]),
        (dict(gradient="adjoint", adjoint_method="nope"), ValueError, ["nope"]),
        (dict(gradient="adjoint", adjoint_atol=-1.0), ValueError, ["adjoint_atol", "-1.0"]),
        (dict(gradient="adjoint", seminorm=True, method="rk4"), ValueError,
         ["seminorm", "fixed grid"]),
    ],
)
def test_bad_config_names_the_argument(kwargs, exc_type, words):
    with pytest.raises(exc_type) as exc:
        node.SolverConfig(**kwargs)
    for w in words:
        assert w in str(exc.value), str(exc.value)


def test_defaults_are_node_solves():
    config = node.SolverConfig()
    y0 = _y0()
    solution = config.solve(Decay(), y0, T)
    expected = node.solve(Decay(), y0, T)
    assert torch.equal(solution.ys, expected.ys)
    assert solution.stats == expected.stats
    assert torch.equal(config.odeint(Decay(), y0, T), node.odeint(Decay(), y0, T))


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_config_solve_equals_node_solve(gradient):
    kwargs = dict(method="tsit5", rtol=1e-6, atol=1e-8, options=dict(first_step=0.01),
                  gradient=gradient)
    if gradient == "adjoint":
        kwargs.update(adjoint_rtol=1e-7, adjoint_atol=1e-9)
    grads, stats = [], []
    for run in (lambda f, y: node.SolverConfig(**kwargs).solve(f, y, T),
                lambda f, y: node.solve(f, y, T, **kwargs)):
        func, y0 = Decay(), _y0(grad=True)
        solution = run(func, y0)
        solution.ys[-1].sum().backward()
        grads.append((y0.grad, func.k.grad))
        stats.append(dict(solution.stats))
    assert stats[0] == stats[1]
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_options_pass_through_and_overrides():
    config = node.SolverConfig(method="dopri5", rtol=1e-5, atol=1e-7,
                               options=dict(max_step=0.05))
    capped = config.solve(Decay(), _y0(), T)
    assert capped.stats["n_accepted"] >= 40  # 2.0 / 0.05 steps at least
    assert capped.stats == node.solve(Decay(), _y0(), T, rtol=1e-5, atol=1e-7,
                                      options=dict(max_step=0.05)).stats
    loose = config.solve(Decay(), _y0(), T, options=None)
    assert loose.stats["n_accepted"] < capped.stats["n_accepted"]


def test_conveniences_map_onto_options():
    grid = node.SolverConfig(method="dopri5", step_size=0.25, max_num_steps=100)
    assert grid.solve_options == dict(step_size=0.25, adaptive=False, max_num_steps=100)
    assert grid.fixed_grid
    assert grid.solve(Decay(), _y0(), T).stats["n_steps"] == 8
    assert node.SolverConfig(method="rk4", step_size=0.25).solve_options == dict(step_size=0.25)
    assert node.SolverConfig().solve_options is None
    seminorm = node.SolverConfig(gradient="adjoint", seminorm=True, max_num_steps=50)
    assert seminorm.adjoint_solve_options == dict(max_num_steps=50, norm="seminorm")
    func, y0 = Decay(), _y0(grad=True)
    seminorm.odeint(func, y0, T)[-1].sum().backward()
    assert func.k.grad is not None


def test_gradient_override_drops_the_adjoint_settings():
    config = node.SolverConfig(gradient="adjoint", adjoint_rtol=1e-3, seminorm=True)
    with torch.no_grad():
        ys = config.odeint(Decay(), _y0(), T, gradient="direct")
    assert torch.equal(ys, node.odeint(Decay(), _y0(), T))


def test_registered_method_is_usable_from_a_config():
    name = "ralston2_test_config"
    if name not in node.available_methods():
        node.register_method(node.ButcherTableau(
            name=name, order=2, c=[0.0, 2 / 3], a=[[], [2 / 3]], b=[0.25, 0.75]))
    config = node.SolverConfig(method=name, step_size=0.01)
    ys = config.odeint(Decay(), _y0(), T)
    assert torch.allclose(ys[-1], _y0() * math.exp(-0.7 * 2.0), rtol=1e-4)


def test_sequence_tolerances_become_tuples_and_round_trip():
    config = node.SolverConfig(rtol=[1e-5, math.inf], atol=(1e-6, 1e-6))
    assert config.rtol == (1e-5, math.inf) and config.atol == (1e-6, 1e-6)
    assert node.SolverConfig(**config.to_dict()) == config


def _tuple_field(t, state):
    x, logp = state
    return -x, torch.sin(30.0 * t) * torch.ones_like(logp)  # a channel hard to integrate


def test_infinite_tolerance_leaves_a_tensor_out_of_the_error_test():
    state = (torch.ones(3, dtype=F64), torch.zeros(1, dtype=F64))
    both = node.solve(_tuple_field, state, T, rtol=1e-6, atol=1e-8)
    for spelling in (dict(rtol=(1e-6, math.inf), atol=(1e-8, math.inf)),
                     dict(rtol=(1e-6, 1e-6), atol=(1e-8, math.inf)),
                     dict(rtol=(1e-6, math.inf), atol=1e-8)):
        x_only = node.solve(_tuple_field, state, T, **spelling)
        alone = node.solve(lambda t, x: -x, state[0], T, rtol=1e-6, atol=1e-8)
        # the steps are those of the first tensor alone: the second takes no part in the test
        assert x_only.stats["n_steps"] == alone.stats["n_steps"] < both.stats["n_steps"]
        assert torch.allclose(x_only.ys[0], alone.ys, rtol=1e-12, atol=0)
        assert torch.isfinite(x_only.ys[1]).all()


def test_infinite_tolerance_in_a_config_and_an_adjoint():
    config = node.SolverConfig(rtol=(1e-6, math.inf), atol=(1e-8, math.inf), gradient="adjoint")
    x0 = torch.ones(3, dtype=F64, requires_grad=True)
    k = torch.tensor(0.5, dtype=F64, requires_grad=True)

    def field(t, state):
        x, logp = state
        return -k * x, torch.sin(30.0 * t) * torch.ones_like(logp)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solution = config.solve(field, (x0, torch.zeros(1, dtype=F64)), T, adjoint_params=(k,))
        solution.ys[0][-1].sum().backward()
    expected = -2.0 * 3 * math.exp(-0.5 * 2.0)  # d/dk sum(exp(-k t)) at t = 2
    assert math.isclose(k.grad.item(), expected, rel_tol=1e-4)
    assert torch.allclose(x0.grad, torch.full((3,), math.exp(-1.0), dtype=F64), rtol=1e-4)


def test_infinite_tolerance_still_fails_on_non_finite_values():
    def blowup(t, state):
        x, logp = state
        return -x, torch.full_like(logp, math.nan) if t > 1.0 else torch.zeros_like(logp)

    state = (torch.ones(2, dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(node.SolverError):
        node.solve(blowup, state, T, rtol=(1e-6, math.inf), atol=(1e-8, math.inf))


def test_scipy_solver_from_a_config():
    """``scipy_solver`` is no tableau, but a config reaches it like any method."""
    config = node.SolverConfig(method="scipy_solver", rtol=1e-8, atol=1e-10,
                               options=dict(solver="DOP853"))
    assert not config.fixed_grid
    y0 = torch.ones(2, dtype=F64)
    expected = node.solve(lambda t, y: -y, y0, T, method="scipy_solver", rtol=1e-8, atol=1e-10,
                          options=dict(solver="DOP853"))
    torch.testing.assert_close(config.solve(lambda t, y: -y, y0, T).ys, expected.ys)


@pytest.mark.parametrize("kwargs, words", [
    (dict(options=dict(solver="Euler")), ["options['solver']", "LSODA", "'Euler'"]),
    (dict(gradient="checkpoint"), ["gradient", "'checkpoint'", "scipy_solver", "adjoint"]),
    (dict(gradient="adjoint", seminorm=True), ["seminorm", "scipy_solver"]),
    (dict(gradient="adjoint", adjoint_options=dict(solver="Euler")), ["'Euler'"]),
    (dict(step_size=0.1), ["step_size", "scipy_solver"]),
])
def test_scipy_solver_config_errors_name_the_argument(kwargs, words):
    with pytest.raises(ValueError) as err:
        node.SolverConfig(method="scipy_solver", **kwargs)
    for word in words:
        assert word in str(err.value)
