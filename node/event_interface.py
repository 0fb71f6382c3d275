"""``odeint_event`` through a user's ``odeint``-like callable (torchdiffeq's protocol).

The callable is called as ``interface(func, y0, t, event_fn=event_fn, **kwargs)`` and returns
``(event_t, solution)``. If its event time already carries gradients (a wrapper of node's own
interfaces) the result is complete; otherwise (torchdiffeq's ``odeint``, whose event solve
differentiates the state at the fixed time ``t*``) the implicit-function-theorem gradient of the
event time is attached here (:mod:`node.event_gradient`). Attaching it to a state that already
moves with ``t*`` would count that motion twice.
"""

from __future__ import annotations

import torch

from node.event_gradient import attach_event_gradient
from node.inputs import check_func
from node.problem import make_problem


def through_interface(interface, func, y0, t, event_fn, per_sample, kwargs):
    """``(event_t, solution)`` from ``interface``, with the event time's gradient attached if
    the interface did not attach it."""
    if not callable(interface):
        raise TypeError("odeint_interface must be callable with odeint's signature, got "
                        f"{type(interface).__name__}")
    if per_sample:
        raise ValueError("per_sample=True needs odeint_interface to be node.odeint or "
                         f"node.odeint_adjoint, got {interface!r}")
    check_func(event_fn)
    result = interface(func, y0, t, event_fn=event_fn, **kwargs)
    if not (isinstance(result, tuple | list) and len(result) == 2
            and isinstance(result[0], torch.Tensor) and result[0].numel() == 1):
        raise ValueError("odeint_interface called with event_fn must return (event_t, solution) "
                         f"with a scalar tensor event_t, got {type(result).__name__}")
    event_t, solution = result
    if event_t.requires_grad or not torch.is_grad_enabled():
        return event_t, solution
    is_tuple = isinstance(solution, tuple | list)
    y_event = tuple(s[-1] for s in solution) if is_tuple else solution[-1]
    problem = make_problem(func, y0, t, method=None, rtol=1e-7, atol=1e-9, options=None)
    times = event_t.detach().reshape(1).to(t.dtype)
    with torch.no_grad():
        g = problem.layout.flatten(y_event).detach()
        g = event_fn(times.reshape(()), problem.layout.unflatten(g)).reshape(-1)
        comp = int(g.abs().argmin())  # the component that fired is the one that is zero
    event_t, y_event = attach_event_gradient(problem, event_fn, times, [comp], y_event, False)
    if is_tuple:
        return event_t, tuple(torch.cat([s[:-1], y[None]]) for s, y in zip(solution, y_event,
                                                                               strict=True))
    return event_t, torch.cat([solution[:-1], y_event[None]])
