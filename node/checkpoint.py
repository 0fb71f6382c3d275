"""Checkpoint gradient mode: discretise-then-optimise with recomputation.

Each Runge-Kutta step runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant), which
keeps only the step's inputs and recomputes its stages during the backward pass. The gradient is
the exact gradient of the computed forward solution, like the direct mode's, with memory that grows
with the number of steps times the state size rather than with the size of the whole graph.
Non-reentrant checkpointing is itself differentiable, so gradients of gradients work.
"""

from __future__ import annotations

from torch.utils.checkpoint import checkpoint

from node.runge_kutta import rk_step


def checkpointed_rk_step(f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end=False,
                         perturb_start=False):
    """:func:`node.runge_kutta.rk_step` with its stages recomputed in the backward pass."""
    return checkpoint(
        rk_step, f, tau0, y0, k0, h_tau, tau1, h, co, perturb_end, perturb_start,
        use_reentrant=False, preserve_rng_state=False,
    )
