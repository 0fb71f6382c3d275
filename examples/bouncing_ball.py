"""A bouncing ball: chained terminal events, gradients through event times, and a small inverse
problem.

A ball dropped from height ``h`` falls under gravity ``g`` (``x'' = -g``). At each impact with
the floor (``x = 0``, found by :func:`node.odeint_event`) its velocity flips and is multiplied by
the coefficient of restitution ``e``, and the solve continues from the impact time. Because the
impact times are differentiable with respect to the initial state and to the parameters, the
height and restitution coefficient can be recovered from observed bounce times by gradient
descent. The closed form, ``t_1 = sqrt(2h/g)`` and ``t_{k+1} = t_k + 2 e^k sqrt(2h/g)``, is used
only to check the result.

Run::

    python examples/bouncing_ball.py [--out outputs/bouncing_ball.png]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import node

DTYPE = torch.float64
GRAVITY = 9.81


class FreeFall(nn.Module):
    """``(x, v)' = (v, -g)``."""

    def __init__(self, gravity: float | torch.Tensor = GRAVITY) -> None:
        super().__init__()
        self.gravity = torch.as_tensor(gravity, dtype=DTYPE)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = y[..., 1]
        return torch.stack([v, -self.gravity * torch.ones_like(v)], dim=-1)


def floor_contact(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Event function: the height above the floor."""
    return y[..., 0]


@dataclass
class Trajectory:
    """A dense trajectory for plotting (no gradients)."""

    t: torch.Tensor
    x: torch.Tensor


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(DTYPE) if value.dtype != DTYPE else value
    return torch.tensor(float(value), dtype=DTYPE)


def simulate_bounces(
    height,
    restitution,
    n_bounces: int,
    gravity=GRAVITY,
    *,
    dense_points: int = 60,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> tuple[torch.Tensor, Trajectory | None]:
    """Drop a ball from ``height`` (at rest, at ``t = 0``) and follow it through ``n_bounces``.

    Each impact is a terminal event; the next flight starts at the impact time from the floor
    with velocity ``-restitution * v_impact``. ``height``, ``restitution`` and ``gravity`` may be
    tensors requiring gradients.

    Returns:
        ``(bounce_times, trajectory)``: the impact times as a ``[n_bounces]`` tensor,
        differentiable with respect to the inputs, and a dense :class:`Trajectory` of the height
        over ``[0, t_last]`` (``dense_points`` points per flight; ``None`` if ``dense_points`` is
        0).
    """
    if n_bounces < 1:
        raise ValueError(f"n_bounces must be >= 1, got {n_bounces}")
    height, restitution = _as_tensor(height), _as_tensor(restitution)
    field = FreeFall(_as_tensor(gravity))
    state = torch.stack([height, torch.zeros_like(height)])
    t0 = torch.zeros((), dtype=DTYPE)
    times, dense_t, dense_x = [], [], []
    for _ in range(n_bounces):
        event_t, sol = node.odeint_event(field, state, t0, event_fn=floor_contact,
                                         rtol=rtol, atol=atol)
        if dense_points:
            with torch.no_grad():
                ts = torch.linspace(float(t0), float(event_t), dense_points, dtype=DTYPE)
                xs = node.odeint(field, state.detach(), ts, rtol=rtol, atol=atol)[:, 0]
            dense_t.append(ts)
            dense_x.append(xs.clamp_min(0.0))
        x_hit, v_hit = sol[1, 0], sol[1, 1]
        # Restart exactly on the floor (the located state is there to rounding, and a value of
        # -1e-16 would read as a crossing at the start), keeping x_hit's (zero) sensitivity.
        state = torch.stack([x_hit - x_hit.detach(), -restitution * v_hit])
        t0 = event_t
        times.append(event_t)
    trajectory = Trajectory(torch.cat(dense_t), torch.cat(dense_x)) if dense_points else None
    return torch.stack(times), trajectory


def analytic_bounce_times(height: float, restitution: float, n_bounces: int,
                          gravity: float = GRAVITY) -> list[float]:
    """``t_1 = sqrt(2h/g)``, ``t_{k+1} = t_k + 2 e^k sqrt(2h/g)``."""
    fall = math.sqrt(2 * height / gravity)
    times = [fall]
    for k in range(1, n_bounces):
        times.append(times[-1] + 2 * restitution**k * fall)
    return times


@dataclass
class Fit:
    height: float
    restitution: float
    losses: list[float]
    evaluations: int


def fit_bounces(
    observed: torch.Tensor,
    height_init: float,
    restitution_init: float,
    *,
    gravity: float = GRAVITY,
    max_iter: int = 200,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> Fit:
    """Recover the height and restitution coefficient from observed bounce times.

    L-BFGS (strong Wolfe line search, float64) on the mean squared error of the bounce times,
    relative to the first one. The parameters are unconstrained through ``h = exp(u)`` and
    ``e = sigmoid(z)``, so that no trial point of the line search is unphysical (a negative
    ``e`` would send the ball through the floor, where it never bounces again).
    """
    observed = observed.detach().to(DTYPE)
    n_bounces = observed.numel()
    scale = float(observed[0])
    u = torch.tensor(math.log(height_init), dtype=DTYPE, requires_grad=True)
    z = torch.tensor(math.log(restitution_init / (1 - restitution_init)), dtype=DTYPE,
                     requires_grad=True)
    optimizer = torch.optim.LBFGS([u, z], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-14, tolerance_change=1e-18,
                                  line_search_fn="strong_wolfe")
    losses: list[float] = []

    def closure():
        optimizer.zero_grad()
        times, _ = simulate_bounces(u.exp(), torch.sigmoid(z), n_bounces, gravity,
                                    dense_points=0, rtol=rtol, atol=atol)
        loss = ((times - observed) / scale).pow(2).mean()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return Fit(float(u.exp()), float(torch.sigmoid(z)), losses, len(losses))


def plot(path: Path, true_traj: Trajectory, fit_traj: Trajectory, start_traj: Trajectory,
         true_times, fit_times, fit: Fit, truth: tuple[float, float],
         start: tuple[float, float]) -> None:
    """Trajectories (true, initial guess, fitted) with the bounce times, and the loss history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2),
                                      gridspec_kw={"width_ratios": [2.4, 1]})
    ax.plot(true_traj.t, true_traj.x, color="tab:blue", lw=2.2,
            label=f"true (h={truth[0]:.3f} m, e={truth[1]:.3f})")
    ax.plot(start_traj.t, start_traj.x, color="0.55", lw=1.0, ls=":",
            label=f"initial guess (h={start[0]:.3f} m, e={start[1]:.3f})")
    ax.plot(fit_traj.t, fit_traj.x, color="tab:orange", lw=1.4, ls="--",
            label=f"fitted (h={fit.height:.4f} m, e={fit.restitution:.4f})")
    for i, tb in enumerate(true_times):
        ax.axvline(tb, color="0.75", lw=0.8, zorder=0,
                   label="observed bounce times" if i == 0 else None)
    ax.plot(true_times, [0.0] * len(true_times), "kx", ms=9, mew=2, label="observed impacts")
    ax.plot(fit_times, [0.0] * len(fit_times), "o", mfc="none", mec="tab:red", ms=11,
            label="fitted impacts")
    ax.set_xlabel("time t [s]")
    ax.set_ylabel("height x [m]")
    ax.set_title("Bouncing ball: impacts as terminal events (node.odeint_event)")
    ax.set_ylim(bottom=-0.08)
    ax.legend(loc="upper right", fontsize=8.5)
    ax.grid(alpha=0.3)

    ax_loss.semilogy(range(1, len(fit.losses) + 1), [max(v, 1e-300) for v in fit.losses],
                     color="tab:green")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_xlabel("loss evaluation (L-BFGS)")
    ax_loss.set_ylabel("relative MSE of bounce times")
    ax_loss.set_title("fit of h and e")
    ax_loss.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/bouncing_ball.png"),
                        help="where to write the plot (default: %(default)s)")
    parser.add_argument("--height", type=float, default=2.0, help="true initial height [m]")
    parser.add_argument("--restitution", type=float, default=0.8,
                        help="true coefficient of restitution")
    parser.add_argument("--bounces", type=int, default=6, help="number of observed bounces")
    parser.add_argument("--height-init", type=float, default=1.0, help="initial guess of h")
    parser.add_argument("--restitution-init", type=float, default=0.5,
                        help="initial guess of e")
    parser.add_argument("--max-iter", type=int, default=200,
                        help="most L-BFGS iterations (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="std of Gaussian noise added to the observed times [s]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    truth = (args.height, args.restitution)
    with torch.no_grad():
        observed, true_traj = simulate_bounces(*truth, args.bounces)
    if args.noise > 0:
        gen = torch.Generator().manual_seed(args.seed)
        observed = observed + args.noise * torch.randn(observed.shape, generator=gen,
                                                       dtype=DTYPE)
    analytic = analytic_bounce_times(*truth, args.bounces)
    solver_error = max(abs(a - b) for a, b in zip(observed.tolist(), analytic, strict=True))

    fit = fit_bounces(observed, args.height_init, args.restitution_init, max_iter=args.max_iter)
    start_guess = (args.height_init, args.restitution_init)
    with torch.no_grad():
        fit_times, fit_traj = simulate_bounces(fit.height, fit.restitution, args.bounces)
        _, start_traj = simulate_bounces(*start_guess, args.bounces)
    plot(args.out, true_traj, fit_traj, start_traj, observed.tolist(), fit_times.tolist(), fit,
         truth, start_guess)
    elapsed = time.perf_counter() - start

    print(f"bounce times (observed): {', '.join(f'{v:.6f}' for v in observed.tolist())}")
    print(f"max |event solver - closed form| = {solver_error:.2e} s")
    print(f"{'':14s}{'true':>10s}{'start':>10s}{'fitted':>12s}{'error':>11s}")
    for name, t_, s_, f_ in (("height h", args.height, args.height_init, fit.height),
                             ("restitution e", args.restitution, args.restitution_init,
                              fit.restitution)):
        print(f"{name:14s}{t_:10.4f}{s_:10.4f}{f_:12.6f}{abs(f_ - t_):11.2e}")
    print(f"L-BFGS: {fit.evaluations} loss evaluations, final loss {fit.losses[-1]:.3e}")
    print(f"plot written to {args.out}  ({elapsed:.1f} s)")
    return {
        "height": fit.height,
        "restitution": fit.restitution,
        "losses": fit.losses,
        "observed": observed,
        "out": args.out,
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
