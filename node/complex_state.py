"""Complex states, solved as real ones.

A complex state tensor of shape ``S`` is handed to the solver as its real view of shape
``(*S, 2)`` (:func:`torch.view_as_real`, no copy); ``func`` is wrapped to take and return such
views and the solution is viewed back as complex. Time stays real. Every method, option and
gradient mode then works unchanged, on the real problem. Gradients follow PyTorch's convention
for complex tensors: for a real loss ``L`` and ``z = x + iy``, ``z.grad = dL/dx + i dL/dy``.

The error test measures complex entries by their magnitude, as torchdiffeq does: entry ``z`` has
the scale ``atol + rtol * max(|z0|, |z1|)`` and the RMS norm averages ``|err_z / scale_z|^2`` over
the complex entries. (Measuring real and imaginary parts separately would make the steps depend
on the phase of the state: a component passing through zero would tighten its tolerance to about
``atol``. On ``dy/dt = i y`` torchdiffeq needs 30% fewer evaluations with magnitudes than with
parts, for the same accuracy.) A user ``norm`` receives the scaled error as a complex tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from node.inputs import check_func
from node.state import StateLayout, check_derivative
from node.wrapped_func import WrappedFunction, WrappedModule, wrap_func


class ComplexView:
    """The map between a complex state (a tensor or a tuple of tensors, all of one complex
    dtype) and its real view."""

    def __init__(self, y0) -> None:
        self.layout = StateLayout(y0, allow_complex=True)  # validates, names the culprit
        self.is_tuple = self.layout.is_tuple

    @classmethod
    def of(cls, y0) -> ComplexView | None:
        """The view for a complex ``y0``; ``None`` for a real one (or one that is not a state:
        the real path reports that)."""
        parts = y0 if isinstance(y0, tuple | list) else (y0,)
        if not any(isinstance(y, torch.Tensor) and y.is_complex() for y in parts):
            return None
        view = cls(y0)
        if not view.layout.dtype.is_complex:  # a tuple of real and complex tensors
            raise TypeError(f"y0 mixes real and complex tensors ({[y.dtype for y in parts]}); "
                            "give all of them one dtype")
        return view

    # States ------------------------------------------------------------------------------------

    def real(self, z):
        """The real view of a complex state (or trajectory), in its structure."""
        if isinstance(z, tuple | list):
            return tuple(torch.view_as_real(_resolved(p)) for p in z)
        return torch.view_as_real(_resolved(z))

    def complex(self, x):
        """A real view (a state or a trajectory, ``[..., 2]``) back as complex."""
        if isinstance(x, tuple | list):
            return tuple(_as_complex(p) for p in x)
        return _as_complex(x)

    def tolerance(self, tol):
        """A tolerance for the real view: per-element tensors apply to both parts of an entry."""
        if isinstance(tol, tuple | list):
            return type(tol)(self.tolerance(t) for t in tol)
        if isinstance(tol, torch.Tensor) and tol.numel() > 1:
            return tol.unsqueeze(-1)
        return tol

    def func(self, func: Callable) -> Callable:
        """``func`` on real views (an ``nn.Module`` stays one, with the same parameters; the
        step callbacks receive the state as complex; :mod:`node.wrapped_func`)."""
        check_func(func)
        wrapped = wrap_func(func, _RealViewEvaluation(self), self._complex_callback)
        wrapped.complex_view = self
        return wrapped

    def _complex_callback(self, hook: Callable) -> Callable:
        def callback(t, y, dt):
            return hook(t, self.complex(y), dt)

        return callback

    # The error test on the flat real state (pairs (re, im) are adjacent) ------------------------

    @staticmethod
    def magnitude(x: torch.Tensor) -> torch.Tensor:
        """``|z|`` of each complex entry, for both its parts."""
        pairs = x.view(-1, 2)
        return torch.linalg.vector_norm(pairs, dim=1, keepdim=True).expand(-1, 2).reshape(-1)

    @staticmethod
    def entry_norm(norm: Callable) -> Callable:
        """An RMS norm of the real view made an RMS over complex entries (each has two parts)."""

        def over_entries(x: torch.Tensor) -> torch.Tensor:
            return norm(x) * math.sqrt(2.0)

        return over_entries


def _resolved(z: torch.Tensor) -> torch.Tensor:
    # view_as_real refuses tensors with a pending conjugation or negation (z.conj(), say).
    if z.is_conj() or z.is_neg():
        z = z.resolve_conj().resolve_neg()
    return z


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    try:
        return torch.view_as_complex(x)
    except RuntimeError:
        # Not viewable (an odd storage offset or stride, e.g. a slice of a larger state): copy.
        return torch.complex(x[..., 0], x[..., 1])


class _RealViewEvaluation:
    """``func`` on a real view: complex in, real view out; the first call checks the
    derivative against the state (and casts a real or narrower one to the state's dtype)."""

    def __init__(self, view: ComplexView) -> None:
        self.complex_view = view
        self._cast: torch.dtype | None = None
        self._checked = False

    def __call__(self, func: Callable, t: torch.Tensor, y):
        view = self.complex_view
        out = func(t, view.complex(y))
        if not self._checked:
            self._cast = check_derivative(out, view.layout)
            self._checked = True
        if self._cast is not None:  # a real (or narrower) derivative of a complex state
            out = tuple(o.to(self._cast) for o in out) if view.is_tuple else out.to(self._cast)
        return view.real(out)


def complex_view_of(func) -> ComplexView | None:
    """The complex view of a ``func`` wrapped by :meth:`ComplexView.func` (else ``None``)."""
    if isinstance(func, WrappedFunction | WrappedModule):
        return getattr(func, "complex_view", None)
    return None

