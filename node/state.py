"""The solver's view of a state: one flat vector, whatever the user's tensor or tuple looks like.

Every solver loop works on a 1-D tensor of all state entries (flattening a tensor is a free view;
a tuple is concatenated once at the start). :class:`StateLayout` converts between the user's
structure and that vector, and :class:`FlatVectorField` wraps the user's ``func`` accordingly.
Time is handled as Python floats in *solver time* ``tau = direction * t``, which increases even
when the user integrates backwards; ``FlatVectorField`` turns it back into the user's time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Tolerance = float | torch.Tensor


class StateLayout:
    """Shapes of the user's state and the maps to and from the flat solver state."""

    def __init__(self, y0, *, allow_complex: bool = False) -> None:
        if isinstance(y0, torch.Tensor):
            tensors = (y0,)
            self.is_tuple = False
        elif isinstance(y0, tuple | list) and len(y0) > 0:
            tensors = tuple(y0)
            self.is_tuple = True
            for i, y in enumerate(tensors):
                if not isinstance(y, torch.Tensor):
                    raise TypeError(f"y0[{i}] must be a torch.Tensor, got {type(y).__name__}")
        else:
            raise TypeError(
                f"y0 must be a torch.Tensor or a non-empty tuple of tensors, got "
                f"{type(y0).__name__}"
            )
        first = tensors[0]
        for i, y in enumerate(tensors):
            where = f"y0[{i}]" if self.is_tuple else "y0"
            if not (y.is_floating_point() or (allow_complex and y.is_complex())):
                kinds = "floating or complex" if allow_complex else "floating"
                raise TypeError(f"{where} must have a {kinds} dtype, got {y.dtype}")
            if y.dtype != first.dtype:
                raise TypeError(f"{where} has dtype {y.dtype}, expected {first.dtype} like y0[0]")
            if y.device != first.device:
                raise TypeError(f"{where} is on {y.device}, expected {first.device} like y0[0]")
        # Plain tuples of ints: ``view`` is measurably faster with them than with torch.Size.
        self.shapes = tuple(tuple(int(d) for d in y.shape) for y in tensors)
        self.numels = tuple(y.numel() for y in tensors)
        self.numel = sum(self.numels)
        self.dtype = first.dtype
        self.device = first.device

    def flatten(self, y) -> torch.Tensor:
        if not self.is_tuple:
            return y.reshape(-1)
        return torch.cat([part.reshape(-1) for part in y])

    def unflatten(self, flat: torch.Tensor):
        if not self.is_tuple:
            return flat.view(self.shapes[0])
        return tuple(p.view(s) for p, s in zip(flat.split(self.numels), self.shapes, strict=True))

    def unflatten_trajectory(self, flat: torch.Tensor):
        """``[T, N]`` to ``[T, *shape]`` (or a tuple of such)."""
        n = flat.shape[0]
        if not self.is_tuple:
            return flat.view(n, *self.shapes[0])
        parts = flat.split(self.numels, dim=1)
        return tuple(p.reshape(n, *s) for p, s in zip(parts, self.shapes, strict=True))

    def flat_tolerance(self, name: str, tol) -> Tolerance:
        """A tolerance as a Python float or a flat per-element tensor, validated."""
        if self.is_tuple and isinstance(tol, tuple | list):
            if len(tol) != len(self.shapes):
                raise ValueError(
                    f"{name} has {len(tol)} entries, expected one per state tensor "
                    f"({len(self.shapes)})"
                )
            parts = [
                _tolerance_tensor(name, t, shape, self.dtype, self.device)
                for t, shape in zip(tol, self.shapes, strict=True)
            ]
            return torch.cat([p.reshape(-1) for p in parts])
        if isinstance(tol, torch.Tensor) and tol.numel() > 1:
            if self.is_tuple:
                raise ValueError(
                    f"{name} for a tuple state must be a number or a tuple with one entry per "
                    f"state tensor, got a tensor of shape {tuple(tol.shape)}"
                )
            return _tolerance_tensor(name, tol, self.shapes[0], self.dtype, self.device).reshape(-1)
        return tolerance_number(name, tol)


# An entry of a per-tensor or per-element tolerance may be ``inf`` (in rtol or atol): that part of
# the state is left out of the error test (see node.tolerance.ErrorScale). This is the spelling of
# "no error control" for, e.g., a CNF's log-density channel, instead of a huge finite sentinel. A
# single number for the whole state must be finite: inf there would switch error control off
# altogether, which a fixed-grid method says plainly.
def tolerance_number(name: str, tol, *, allow_inf: bool = False) -> float:
    """A scalar tolerance, validated: a number >= 0, finite unless ``allow_inf``."""
    if isinstance(tol, torch.Tensor):
        tol = tol.item()
    if isinstance(tol, bool) or not isinstance(tol, int | float):
        raise TypeError(f"{name} must be a number or tensor, got {type(tol).__name__}")
    if not tol >= 0 or (math.isinf(tol) and not allow_inf):
        what = ">= 0" if allow_inf else ("finite and >= 0 (inf is allowed only per tensor of a "
                                         "tuple state or per element)")
        raise ValueError(f"{name} must be {what}, got {tol!r}")
    return float(tol)


def check_not_both_zero(rtol_flat, atol_flat, rtol, atol) -> None:
    """Reject tolerances that are both 0 for some element (``rtol``/``atol``: as given, for the
    message)."""
    both_zero = torch.as_tensor(rtol_flat) == 0
    both_zero = both_zero & (torch.as_tensor(atol_flat) == 0)
    if bool(both_zero.any()):
        raise ValueError("rtol and atol must not both be 0 (for any element): the error test "
                         f"would divide by zero; got rtol={rtol!r}, atol={atol!r}")


def _tolerance_tensor(name, tol, shape, dtype, device) -> torch.Tensor:
    tol = torch.as_tensor(tol, dtype=dtype, device=device)
    if not bool(torch.all(tol >= 0)):
        raise ValueError(f"{name} must be >= 0 everywhere (inf: no error control), got {tol}")
    try:
        return torch.broadcast_to(tol, shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(tol.shape)} does not broadcast to the state shape "
            f"{tuple(shape)}"
        ) from None


class FlatVectorField:
    """``func(t, y)`` seen from the solver: flat states, solver time, evaluation counting.

    The first call checks that ``func`` returns the state's structure and shape, so that a
    mismatch is reported by name instead of surfacing as a broadcasting error mid-solve. A
    derivative of another floating dtype (a float64 ``func`` on a float32 state, say) is accepted
    and cast to the state's dtype, as torchdiffeq accepts it; the cast is skipped, at no cost,
    when the dtypes match.
    """

    def __init__(
        self,
        func: Callable,
        layout: StateLayout,
        time_dtype: torch.dtype,
        direction: float,
    ) -> None:
        self.func = func
        self.layout = layout
        self.time_dtype = time_dtype if time_dtype is not None else layout.dtype
        self.direction = direction
        self.device = layout.device
        self.nfe = 0
        self._checked = False
        self._cast: torch.dtype | None = None  # set by the first call if func's dtype differs
        self._plain_vector = not layout.is_tuple and len(layout.shapes[0]) == 1

    def time(self, tau: float) -> torch.Tensor:
        """The user's time for solver time ``tau``, as a 0-d tensor."""
        return torch.scalar_tensor(self.direction * tau, dtype=self.time_dtype, device=self.device)

    def _time(self, tau: float, perturb: int) -> torch.Tensor:
        t = self.time(tau)
        if perturb:
            # The next representable time after (perturb=+1) or before (-1) t in solve direction.
            toward = math.inf if perturb * self.direction > 0 else -math.inf
            t = torch.nextafter(t, torch.full_like(t, toward))
        return t

    def __call__(self, tau: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        return self.at(self._time(tau, perturb), y)

    def shaped(self, tau: float, y, perturb: int = 0):
        """``func`` on a state already in the user's structure; returns ``func``'s output as is.

        For the buffered step, after :meth:`__call__` has checked ``func``'s output once.
        """
        self.nfe += 1
        return self.func(self._time(tau, perturb), y)

    def at(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``func`` at the user's time tensor ``t`` (which may carry gradients)."""
        self.nfe += 1
        if self._plain_vector:
            out = self.func(t, y)
        else:
            out = self.func(t, self.layout.unflatten(y))
        if not self._checked:
            self._cast = check_derivative(out, self.layout)
            self._checked = True
        if self._plain_vector:
            return out if self._cast is None else out.to(self._cast)
        flat = self.layout.flatten(out)
        return flat if self._cast is None else flat.to(self._cast)


def check_derivative(out, layout: StateLayout) -> torch.dtype | None:
    """Check ``func``'s output against the state; return the dtype to cast it to, if any.

    The output must have the state's structure and shapes and a floating dtype (or, for a
    complex state, a floating or complex one); another dtype than the state's is cast to it.
    """
    outs: Sequence = out if layout.is_tuple else (out,)
    if layout.is_tuple and not isinstance(out, tuple | list):
        raise TypeError(
            f"func must return a tuple of {len(layout.shapes)} tensors for a tuple state, got "
            f"{type(out).__name__}"
        )
    if len(outs) != len(layout.shapes):
        raise ValueError(
            f"func returned {len(outs)} tensors, expected {len(layout.shapes)} like y0"
        )
    for i, (o, shape) in enumerate(zip(outs, layout.shapes, strict=True)):
        where = f"func(t, y)[{i}]" if layout.is_tuple else "func(t, y)"
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"{where} must return a tensor, got {type(o).__name__}")
        if o.shape != shape:
            raise ValueError(
                f"{where} returned shape {tuple(o.shape)}, expected the state's shape "
                f"{tuple(shape)}"
            )
        if not (o.is_floating_point() or (o.is_complex() and layout.dtype.is_complex)):
            raise TypeError(
                f"{where} returned dtype {o.dtype}, expected a floating dtype like the "
                f"state's ({layout.dtype})"
            )
    dtypes = {o.dtype for o in outs}
    return None if dtypes == {layout.dtype} else layout.dtype
