"""Butcher tableaus of implicit Runge-Kutta methods: the data of the implicit family.

A method with ``S`` stages advances ``y(t0)`` to ``y(t0 + h)`` by solving the stage equations

    k_i = f(t0 + c_i h,  y0 + h * sum_j a_ij k_j),        i = 0 .. S-1   (all j, not only j < i)
    y1  = y0 + h * sum_i b_i k_i
    err = h * sum_i e_i k_i          (e = b - b_hat, the embedded lower-order difference)

The coupling matrix ``a`` is full (``S x S``). Its shape decides how the stages are solved:

* *diagonally implicit* (DIRK, ``a_ij = 0`` for ``j > i``): one ``N``-dimensional nonlinear
  system per stage, solved in order; *singly* diagonally implicit (SDIRK) when every implicit
  stage has the same diagonal entry ``gamma``, so one factorisation of ``I - h gamma J`` serves
  all stages of a step;
* *fully implicit* (Radau IIA, Gauss-Legendre): one coupled ``S*N``-dimensional system.

An *explicit first stage* (``a_0j = 0`` for all ``j``: ESDIRK methods such as Kvaerno's) makes
``k_0 = f(t0, y0)``; together with *stiff accuracy* (``c_{S-1} = 1`` and the last row of ``a``
equal to ``b``, so ``y1`` is the last stage's input) the last stage is ``f(t1, y1)``, reused as
the next step's first stage exactly like an explicit FSAL tableau. That is what lets the
explicit family's dense output (cubic Hermite from ``k_0`` and ``k_{S-1}``), error estimate and
event location run unchanged on such methods.

This module holds only the data type and derived quantities; the coefficients of each method
live in ``node/methods/<name>.py`` with their provenance, and the stage solver in the implicit
engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from node.tableau import Number, _floats, weight_problems


@dataclass(frozen=True)
class ImplicitTableau:
    """Coefficients of an implicit Runge-Kutta method.

    Args:
        name: the method's name as passed to ``odeint(method=...)``.
        order: order of the propagated solution ``y1``; the step-size controller uses the
            exponent ``1 / order`` as for the explicit pairs.
        c: nodes ``c_i``, length ``S``.
        a: the full ``S x S`` coupling matrix, row by row (every row has ``S`` entries).
        b: weights of the propagated solution, length ``S``.
        b_error: error weights ``e_i = b_i - b_hat_i`` of an embedded pair, length ``S``;
            ``None`` for fixed-step methods.
        dense: optional continuous extension as in :class:`node.ButcherTableau` (``S`` rows of
            polynomial coefficients in ``theta``, lowest power ``theta**1`` first). ``None``
            means cubic Hermite interpolation, which needs an explicit first stage and stiff
            accuracy (see the module docstring) in adaptive solves.
        source: citation for the coefficients.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None = None
    dense: tuple[tuple[float, ...], ...] | None = None
    source: str = ""
    diagonally_implicit: bool = field(init=False)
    explicit_first_stage: bool = field(init=False)
    stiffly_accurate: bool = field(init=False)

    def __init__(
        self,
        name: str,
        order: int,
        c: Sequence[Number],
        a: Sequence[Sequence[Number]],
        b: Sequence[Number],
        b_error: Sequence[Number] | None = None,
        dense: Sequence[Sequence[Number]] | None = None,
        source: str = "",
    ) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "order", int(order))
        set_(self, "c", _floats(c))
        set_(self, "a", tuple(_floats(row) for row in a))
        set_(self, "b", _floats(b))
        set_(self, "b_error", None if b_error is None else _floats(b_error))
        set_(self, "dense", None if dense is None else tuple(_floats(row) for row in dense))
        set_(self, "source", source)
        self._validate()
        s = self.stages
        set_(self, "diagonally_implicit",
             all(self.a[i][j] == 0.0 for i in range(s) for j in range(i + 1, s)))
        set_(self, "explicit_first_stage", all(x == 0.0 for x in self.a[0]))
        set_(self, "stiffly_accurate",
             self.c[-1] == 1.0
             and all(abs(x - y) < 1e-15 for x, y in zip(self.a[-1], self.b, strict=True)))

    # The explicit family's interface (read by interpolation, error test and event location).
    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def fsal(self) -> bool:
        """``y1`` is the last stage's input and ``k_{S-1} = f(t1, y1)`` starts the next step."""
        return self.stages > 1 and self.explicit_first_stage and self.stiffly_accurate

    @property
    def reuses_last_stage(self) -> bool:
        return self.fsal

    @property
    def implicit_stages(self) -> tuple[int, ...]:
        """Indices of the stages that need a nonlinear solve (all but an explicit first one)."""
        return tuple(i for i in range(self.stages) if any(x != 0.0 for x in self.a[i]))

    @property
    def singly_diagonal(self) -> float | None:
        """The common diagonal entry ``gamma`` of a diagonally implicit tableau whose implicit
        stages all share it (SDIRK/ESDIRK), else ``None``."""
        if not self.diagonally_implicit:
            return None
        diagonal = {self.a[i][i] for i in self.implicit_stages}
        return diagonal.pop() if len(diagonal) == 1 and 0.0 not in diagonal else None

    def _validate(self) -> None:
        s = len(self.c)
        problems = []
        if s == 0:
            problems.append("at least one stage is needed")
        if len(self.a) != s:
            problems.append(f"a must have {s} rows, got {len(self.a)}")
        for i, row in enumerate(self.a):
            if len(row) != s:
                problems.append(f"a row {i} must have {s} entries, got {len(row)}")
            elif i < s and abs(sum(row) - self.c[i]) > 1e-12:
                problems.append(
                    f"row sum of a row {i} is {sum(row)!r}, expected c[{i}] = {self.c[i]!r}"
                )
        problems += weight_problems(self, s)
        if not problems and all(self.a[i][j] == 0.0 for i in range(s) for j in range(i, s)):
            problems.append("a is strictly lower triangular: the method is explicit; use "
                            "node.ButcherTableau")
        if problems:
            raise ValueError(f"invalid implicit tableau {self.name!r}: " + "; ".join(problems))
