"""The method registry: every method by name; the Runge-Kutta methods as tableau data.

Each module in this package defines one ``TABLEAU``: a :class:`~node.ButcherTableau` (explicit
family) or an :class:`~node.ImplicitTableau` (implicit family); users add their own with
:func:`register_method`. The multistep family (Adams) has no tableau: its entries are
:class:`~node.multistep.AdamsMethod` descriptors, run by their own loop (:mod:`node.adams`).
"""

from __future__ import annotations

from importlib import import_module

from node.implicit_tableau import ImplicitTableau
from node.multistep import ADAMS_METHODS, AdamsMethod
from node.tableau import ButcherTableau

Tableau = ButcherTableau | ImplicitTableau
Method = Tableau | AdamsMethod  # what the registry holds

_BUILTIN = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "adaptive_heun",
    "fehlberg2",
    "bosh3",
    "dopri5",
    "tsit5",
    "dopri8",
    "implicit_euler",
    "implicit_midpoint",
    "trapezoid",
    "sdirk2",
    "trbdf2",
    "radauIIA3",
    "radauIIA5",
    "gl4",
    "gl6",
    "kvaerno3",
    "kvaerno5",
)

_REGISTRY: dict[str, Method] = {
    name: import_module(f"node.methods.{name}").TABLEAU for name in _BUILTIN
}
_REGISTRY.update(ADAMS_METHODS)


def register_method(tableau: Tableau, *, overwrite: bool = False) -> None:
    """Make ``tableau`` available as ``odeint(..., method=tableau.name)``."""
    if not isinstance(tableau, (ButcherTableau, ImplicitTableau)):
        raise TypeError("register_method expects a ButcherTableau or ImplicitTableau, got "
                        f"{type(tableau).__name__}")
    if tableau.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"method {tableau.name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[tableau.name] = tableau


def available_methods() -> list[str]:
    """Names accepted by ``method=``, in registration order."""
    return list(_REGISTRY)


def get_tableau(method: str | Method | None) -> Method:
    """Look a method up by name (``None`` means ``"dopri5"``, as in torchdiffeq): the tableau
    of a Runge-Kutta method, the :class:`~node.multistep.AdamsMethod` of a multistep one."""
    if isinstance(method, (ButcherTableau, ImplicitTableau, AdamsMethod)):
        return method
    if method is None:
        method = "dopri5"
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a string or ButcherTableau, got {type(method).__name__}: {method!r}"
        )
    try:
        return _REGISTRY[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; expected one of: {', '.join(available_methods())}"
        ) from None
