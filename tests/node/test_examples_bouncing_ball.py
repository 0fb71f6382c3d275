"""examples/bouncing_ball.py: chained events against the closed form, gradients, a short fit."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bouncing_ball.py"
G = 9.81


@pytest.fixture(scope="module")
def bb():
    spec = importlib.util.spec_from_file_location("bouncing_ball_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def closed_form(h: float, e: float, n: int, g: float = G) -> list[float]:
    fall = math.sqrt(2 * h / g)
    times = [fall]
    for k in range(1, n):
        times.append(times[-1] + 2 * e**k * fall)
    return times


def test_bounce_times_match_closed_form(bb):
    h, e, n = 1.7, 0.75, 5
    times, traj = bb.simulate_bounces(h, e, n)
    assert times.shape == (n,) and times.dtype == torch.float64
    torch.testing.assert_close(times, torch.tensor(closed_form(h, e, n), dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)
    # The dense trajectory starts at rest at h, stays above the floor, touches it at each bounce
    # and peaks at h e^(2k) in flight k.
    assert float(traj.t[0]) == 0.0 and math.isclose(float(traj.t[-1]), float(times[-1]))
    assert math.isclose(float(traj.x[0]), h) and float(traj.x.min()) >= 0.0
    bounds = [0.0, *times.tolist()]
    for k in range(1, n):
        inside = (traj.t > bounds[k]) & (traj.t < bounds[k + 1])
        assert math.isclose(float(traj.x[inside].max()), h * e ** (2 * k), rel_tol=2e-3)
    assert bb.analytic_bounce_times(h, e, n) == pytest.approx(closed_form(h, e, n), rel=1e-15)


def test_gradients_of_bounce_times(bb):
    h0, e0, g0, n = 2.0, 0.8, G, 4
    h = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(e0, dtype=torch.float64, requires_grad=True)
    g = torch.tensor(g0, dtype=torch.float64, requires_grad=True)
    times, traj = bb.simulate_bounces(h, e, n, gravity=g, dense_points=0)
    assert traj is None
    fall = math.sqrt(2 * h0 / g0)
    for k in range(n):
        dh, de, dg = torch.autograd.grad(times[k], (h, e, g), retain_graph=True)
        t_k = closed_form(h0, e0, n)[k]
        # t_k = fall * (1 + 2 sum_{j<k} e^j), j >= 1; fall = sqrt(2h/g).
        de_expected = 2 * fall * sum(j * e0 ** (j - 1) for j in range(1, k + 1))
        assert math.isclose(float(dh), t_k / (2 * h0), rel_tol=1e-8)
        assert math.isclose(float(dg), -t_k / (2 * g0), rel_tol=1e-8)
        if k == 0:
            assert abs(float(de)) < 1e-12
        else:
            assert math.isclose(float(de), de_expected, rel_tol=1e-8)


def test_short_fit_recovers_parameters_and_writes_plot(bb, tmp_path, capsys):
    # The plot needs matplotlib, which the solver does not: `make test` (the dev extra, with the
    # training stack) runs this test; a torch-only environment skips it, naming matplotlib.
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "bounce.png"
    result = bb.main(["--out", str(out), "--bounces", "3", "--max-iter", "12",
                      "--height-init", "1.2", "--restitution-init", "0.6"])
    assert abs(result["height"] - 2.0) < 1e-2
    assert abs(result["restitution"] - 0.8) < 1e-2
    assert result["losses"][-1] < result["losses"][0]
    assert out.is_file() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "restitution e" in printed and "plot written to" in printed


def test_rejects_zero_bounces(bb):
    with pytest.raises(ValueError, match="n_bounces"):
        bb.simulate_bounces(1.0, 0.5, 0)
