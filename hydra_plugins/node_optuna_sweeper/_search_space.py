"""The search space of a sweep: the sweeper's ``params`` and the command line's sweep overrides
turned into Optuna distributions, plus the fixed overrides every trial gets.

A parameter is given in one of three forms:

- Hydra's sweep syntax, as in ``hydra-optuna-sweeper`` and lightning-hydra-template:
  ``interval(a, b)`` (float in [a, b]), ``tag(log, interval(a, b))`` (log-uniform),
  ``tag(int, interval(a, b))`` (integer), ``range(start, stop[, step])`` (integers or floats of
  Python's range: ``stop`` excluded), ``choice(x, y, ...)`` or ``x,y,...`` (categorical);
- a mapping: ``{type: float, low: 1e-4, high: 1e-1, log: true}``,
  ``{type: int, low: 16, high: 128, step: 16}``, ``{type: categorical, choices: [a, b]}``;
- anything else (``20``, ``"adam"``): a fixed value given to every trial.

Every mistake is reported as a :class:`SearchSpaceError` naming the parameter and its spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
# strings a Hydra override takes unquoted (group options, method names, numbers' text)
_PLAIN = re.compile(r"[A-Za-z0-9_.\-/:+]+")


class SearchSpaceError(ValueError):
    """A search-space entry that cannot be turned into an Optuna distribution."""


def _error(where: str, spec: Any, reason: str) -> SearchSpaceError:
    return SearchSpaceError(f"{where}: {reason} (got {spec!r})")


def override_value(value: Any) -> str:
    """``value`` as the right-hand side of a Hydra override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    return str(value)


def _number(where: str, spec: Any, name: str, value: Any, integer: bool) -> float | int:
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        valid = valid and float(value).is_integer()
    if not valid or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise _error(where, spec, f"'{name}' must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _numeric(where: str, spec: Any, kind: str, low, high, log: bool, step) -> BaseDistribution:
    from optuna.distributions import FloatDistribution, IntDistribution

    integer = kind == "int"
    low = _number(where, spec, "low", low, integer)
    high = _number(where, spec, "high", high, integer)
    if step is not None:
        step = _number(where, spec, "step", step, integer)
    if low > high:
        raise _error(where, spec, f"low={low} is above high={high}")
    if log and low <= 0:
        raise _error(where, spec, f"a log scale needs low > 0, got low={low}")
    if log and step not in (None, 1):
        raise _error(where, spec, "a log scale takes no step")
    if step is not None and step <= 0:
        raise _error(where, spec, f"step must be positive, got {step}")
    if integer:
        return IntDistribution(low, high, log=bool(log), step=1 if step is None else step)
    return FloatDistribution(low, high, log=bool(log), step=step)


def _categorical(where: str, spec: Any, choices: Any) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution

    if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
        raise _error(where, spec, "'choices' must be a non-empty list")
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise _error(where, spec, f"choices must be numbers, strings, booleans or null: "
                         f"{choice!r}")
    return CategoricalDistribution(list(choices))


def _from_mapping(where: str, spec: Mapping) -> BaseDistribution:
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        raise _error(where, spec, f"'type' must be one of {sorted(SPEC_KEYS)}")
    unknown = set(spec) - SPEC_KEYS[kind]
    if unknown:
        raise _error(where, spec, f"unknown keys {sorted(unknown)} for type {kind} "
                     f"(expected {sorted(SPEC_KEYS[kind])})")
    if kind == "categorical":
        if "choices" not in spec:
            raise _error(where, spec, "'choices' is missing")
        return _categorical(where, spec, spec["choices"])
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise _error(where, spec, f"{' and '.join(repr(k) for k in missing)} missing")
    return _numeric(
        where, spec, kind, spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    )


def _from_sweep(where: str, spec: Any, sweep: Any) -> BaseDistribution:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    tags = set(sweep.tags)
    unknown = tags - {"log", "int"}
    if unknown:
        raise _error(where, spec, f"unknown tags {sorted(unknown)} (known: int, log)")
    if isinstance(sweep, ChoiceSweep):
        return _categorical(where, spec, list(sweep.list))
    if isinstance(sweep, IntervalSweep):
        kind = "int" if "int" in tags else "float"
        return _numeric(where, spec, kind, sweep.start, sweep.end, "log" in tags, None)
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        count = math.ceil((stop - start) / step) if step else 0
        if count <= 0:
            raise _error(where, spec, "the range is empty")
        if "log" in tags:
            raise _error(where, spec, "a range has a step and cannot be on a log scale; use "
                         "tag(log, interval(a, b))")
        kind = "int" if all(isinstance(v, int) for v in (start, step)) else "float"
        # Python's range: stop is excluded, the last value is start + (count - 1) * step
        return _numeric(where, spec, kind, start, start + (count - 1) * step, False, step)
    raise _error(where, spec, f"unsupported sweep {type(sweep).__name__}")


def build_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """``(distributions, fixed)``: a distribution per searched key and the fixed overrides, from
    the config's ``params`` then the command line's ``arguments`` (which win on a shared key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    entries = [(f"hydra.sweeper.params['{k}']", str(k), v) for k, v in (params or {}).items()]
    entries += [(f"command-line override '{a}'", None, a) for a in arguments]
    for where, key, spec in entries:
        if isinstance(spec, Mapping):
            space[key] = _from_mapping(where, spec)
            fixed.pop(key, None)
            continue
        line = spec if key is None else f"{key}={override_value(spec)}"
        if key is not None and isinstance(spec, str):
            line = f"{key}={spec}"  # the string is Hydra syntax: a sweep or a plain value
        try:
            override = parser.parse_overrides([line])[0]
        except HydraException as err:
            raise _error(where, spec, f"not a valid Hydra override value: {err}") from err
        name = override.get_key_element()
        if override.is_sweep_override():
            space[name] = _from_sweep(where, spec, override.value())
            fixed.pop(name, None)
        else:
            fixed[name] = line
            space.pop(name, None)
    return space, list(fixed.values())
