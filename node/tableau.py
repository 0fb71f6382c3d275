"""Butcher tableaus: the data that defines an explicit Runge-Kutta method.

A method with ``S`` stages advances ``y(t0)`` to ``y(t0 + h)`` by

    k_i = f(t0 + c_i h,  y0 + h * sum_{j<i} a_ij k_j),      i = 0 .. S-1
    y1  = y0 + h * sum_i b_i k_i
    err = h * sum_i e_i k_i          (e = b - b_hat, the embedded lower-order difference)

and, where a continuous extension is known, interpolates inside the step with

    y(t0 + theta h) = y0 + h * sum_i b_i(theta) k_i,     b_i(theta) = sum_p dense[i][p] theta^(p+1).

A tableau is *FSAL* (first same as last) when its last stage is evaluated at ``(t0 + h, y1)``:
then ``k_{S-1}`` of one step is ``k_0`` of the next and costs nothing. Adaptive methods are written
in FSAL form (for methods that are not FSAL by construction, such as Prince and Dormand's
RK8(7)13M, the derivative at the end point is appended as an extra stage whose ``b`` weight is 0),
which makes ``f(t1, y1)`` available to dense output, to the next step and to event location.

Two low-order pairs (``adaptive_heun``, ``fehlberg2``) instead *reuse* a last stage that sits at
``t0 + h`` but at a lower-order approximation of ``y1`` (``reuse_last_stage=True``), as
torchdiffeq does: the reused derivative is off by ``O(h^p)``, which changes the next step by
``O(h^(p+1))`` and so keeps the order ``p`` while saving one evaluation per step.

This module holds only the data type and derived quantities; the coefficients of each method
live in ``node/methods/<name>.py`` with their provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

Number = float | int | Fraction


def _floats(values: Sequence[Number]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method.

    Args:
        name: the method's name as passed to ``odeint(method=...)``.
        order: order of the propagated solution ``y1``. The step-size controller uses the exponent
            ``1 / order`` (the embedded estimate is of order ``order - 1``), as torchdiffeq does.
        c: nodes ``c_i``, length ``S``, with ``c_0 = 0``.
        a: strictly lower-triangular coupling matrix given row by row; row ``i`` has ``i`` entries
            (row 0 is empty).
        b: weights of the propagated solution, length ``S``.
        b_error: error weights ``e_i = b_i - b_hat_i`` of the embedded pair, length ``S``; ``None``
            for fixed-step methods.
        reuse_last_stage: reuse ``k_{S-1}`` as the next step's ``k_0`` although the last stage is
            not exactly at ``(t0 + h, y1)`` (see the module docstring); implied by FSAL form.
        dense: optional continuous extension, ``S`` rows of polynomial coefficients in ``theta``
            (lowest power first, starting at ``theta**1``). ``None`` means cubic Hermite
            interpolation from ``y0, y1, f(t0, y0), f(t1, y1)``.
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
    reuse_last_stage: bool = False
    fsal: bool = field(init=False)

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
        reuse_last_stage: bool = False,
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
        set_(self, "reuse_last_stage", bool(reuse_last_stage))
        self._validate()
        last = self.a[-1] if self.stages > 1 else ()
        fsal = (
            self.stages > 1
            and self.c[-1] == 1.0
            and self.b[-1] == 0.0
            and all(abs(x - y) < 1e-15 for x, y in zip(last, self.b[:-1], strict=True))
        )
        set_(self, "fsal", fsal)
        if self.reuse_last_stage and (self.stages < 2 or self.c[-1] != 1.0):
            raise ValueError(
                f"invalid Butcher tableau {self.name!r}: reuse_last_stage needs a last stage at "
                f"c = 1, got c[-1] = {self.c[-1]}"
            )

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def reuses_last_stage(self) -> bool:
        """Whether the last stage becomes the next step's first (FSAL or declared reuse)."""
        return self.fsal or self.reuse_last_stage

    @property
    def evaluations_per_step(self) -> int:
        """Function evaluations per step once the first step is made (reuse saves one)."""
        return self.stages - 1 if self.reuses_last_stage else self.stages

    def _validate(self) -> None:
        s = len(self.c)
        problems = []
        if s == 0:
            problems.append("at least one stage is needed")
        if self.c and self.c[0] != 0.0:
            problems.append(f"c[0] must be 0, got {self.c[0]}")
        if len(self.a) != s:
            problems.append(f"a must have {s} rows (row 0 empty), got {len(self.a)}")
        for i, row in enumerate(self.a):
            if len(row) != i:
                problems.append(f"a row {i} must have {i} entries, got {len(row)}")
            elif i and abs(sum(row) - self.c[i]) > 1e-12:
                problems.append(
                    f"row sum of a row {i} is {sum(row)!r}, expected c[{i}] = {self.c[i]!r}"
                )
        problems += weight_problems(self, s)
        if problems:
            raise ValueError(f"invalid Butcher tableau {self.name!r}: " + "; ".join(problems))


def weight_problems(tableau, s: int) -> list[str]:
    """What is wrong with the weights of an ``s``-stage tableau (explicit or implicit): ``b``
    sums to 1, the embedded ``b_error`` to 0, the dense output equals ``b`` at ``theta = 1``, the
    order is positive."""
    b, b_error, dense = tableau.b, tableau.b_error, tableau.dense
    problems = []
    if len(b) != s:
        problems.append(f"b must have {s} entries, got {len(b)}")
    elif abs(sum(b) - 1.0) > 1e-12:
        problems.append(f"b must sum to 1, sums to {sum(b)!r}")
    if b_error is not None:
        if len(b_error) != s:
            problems.append(f"b_error must have {s} entries, got {len(b_error)}")
        elif abs(sum(b_error)) > 1e-12:
            problems.append(f"b_error must sum to 0, sums to {sum(b_error)!r}")
    if dense is not None:
        if len(dense) != s:
            problems.append(f"dense must have {s} rows, got {len(dense)}")
        elif len(b) == s:  # (a malformed b is reported above; theta = 1 cannot be checked)
            at_one = [sum(row) for row in dense]
            if any(abs(x - y) > 1e-10 for x, y in zip(at_one, b, strict=True)):
                problems.append("dense output at theta=1 must equal b")
    if tableau.order < 1:
        problems.append(f"order must be >= 1, got {tableau.order}")
    return problems
