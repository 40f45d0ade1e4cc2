"""Checking YAML values against simple type hints (int, float, str, bool, lists, unions, Literal).

Shared by the protocol config and the strategy registry so both report wrong types the
same way: one line naming the key, the expected type and the value given.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from cil.errors import UserError


@dataclass(frozen=True)
class Range:
    """A bound on a number, attached to a type hint: ``Annotated[int, Range(min=1)]``.

    ``min``/``max`` are inclusive, ``gt`` is an exclusive lower bound. The registry and the
    protocol loader check it together with the type, so a bad value fails when the protocol
    is loaded, before any cell trains.
    """

    min: float | None = None
    max: float | None = None
    gt: float | None = None

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        bad = ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
               or (self.gt is not None and value <= self.gt) or value != value)  # NaN fails every bound
        if bad:
            raise UserError(f"{where} must be {self.describe()}, got {value!r}")


PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(min=0)]
Fraction = Annotated[float, Range(min=0, max=1)]


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        inner, *extras = typing.get_args(tp)
        bounds = " and ".join(e.describe() for e in extras if isinstance(e, Range))
        return f"{type_name(inner)} {bounds}".strip()
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint, converting int -> float where natural."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extras = typing.get_args(tp)
        value = coerce(value, inner, where)
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(value, where)
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except UserError as exc:
                errors.append(exc)
        raise UserError(f"{where}: expected {' or '.join(type_name(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise UserError(f"{where}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")


def check_keys(data: Any, allowed: typing.Iterable[str], where: str) -> dict:
    """``data`` must be a mapping whose keys are all in ``allowed``; returns it as a dict."""
    allowed = list(allowed)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(allowed)}, got {data!r}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    return dict(data)
