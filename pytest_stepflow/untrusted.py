"""Text and JSON from values that user code made: never an exception, never unbounded.

A parametrize value, a `record_property` value, a sub-step argument or a hook's result may
have a `__repr__` or `__str__` that raises, loops over a huge container, or returns a str
subclass with methods of its own; an int may be too long to print. pytest itself never turns
most of these values into text, so a recorder that does must not let them change the run.
Everything here returns plain `str`, bounded, or a JSON scalar.
"""

from __future__ import annotations

import json
import math
import reprlib
import types
from collections.abc import Iterable, Mapping
from typing import Any, cast

from pytest_stepflow.limits import MAX_REPR as MAX_REPR  # parameters and sub-step arguments

MAX_PROPERTY_TEXT = 64 * 1024  # record_property values that are not JSON scalars
_JSON_INT_BITS = 13_000  # about 3,900 digits: below int-to-str's 4,300-digit limit


def clip(text: str | None, limit: int) -> str | None:
    """Return `text` as valid UTF-8 of at most about `limit` bytes; None when empty.

    Lone surrogates (from undecodable bytes) would make SQLite's binding fail, so they are
    written as backslash escapes. Too long text keeps its head and tail, which is where the
    cause and the final error usually are, with a marker of what was dropped.
    """
    if not text:
        return None
    if text.isascii():
        if len(text) <= limit:
            return text
        data = text.encode("ascii")
    else:
        data = text.encode("utf-8", "backslashreplace")
        if len(data) <= limit:
            return data.decode("utf-8")
    half = limit // 2
    marker = f"\n[stepflow: {len(data) - 2 * half} bytes truncated]\n"
    head = data[:half].decode("utf-8", "ignore")
    tail = data[len(data) - half :].decode("utf-8", "ignore")
    return head + marker + tail


_type_name = type.__dict__["__name__"].__get__  # type's own: a metaclass cannot intercept it


def type_name(value: object) -> str:
    try:
        name = _type_name(type(value))
    except Exception:  # pragma: no cover - type.__name__ of a real type cannot fail
        return "object"
    return str.__str__(name)


class _BoundedRepr(reprlib.Repr):
    """reprlib's summary of containers (bounded work for a million-element list), with a
    whole repr only for what fits in the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = self.maxlong = limit
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 40
        self.maxdict = self.maxarray = 40

    def repr_instance(self, x: object, level: int) -> str:
        # reprlib hides a failing __repr__ behind "<Foo instance at 0x...>" (an address:
        # different on every run); let it reach safe_repr, which says what happened.
        return repr(x)


_REPRS: dict[int, _BoundedRepr] = {}


def safe_repr(value: object, limit: int = MAX_REPR) -> str:
    """`repr(value)`, at most about `limit` characters; a placeholder when it raises."""
    bounded = _REPRS.get(limit)
    if bounded is None:
        bounded = _REPRS[limit] = _BoundedRepr(limit)
    try:
        text = _plain(bounded.repr(value))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # any failure of user code: a placeholder
        return f"<unrepresentable {type_name(value)}: {type_name(exc)} in repr()>"
    return text if len(text) <= limit else text[:limit] + "..."


def safe_str(value: object, limit: int | None = None) -> str:
    """`str(value)` as a plain str; a placeholder when it raises."""
    if type(value) is str:
        text = value
    else:
        try:
            text = _plain(value if issubclass(type(value), str) else str(value))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return f"<unprintable {type_name(value)}: {type_name(exc)} in str()>"
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def _plain(text: object) -> str:
    """A str subclass may override every method: work on an exact copy."""
    if type(text) is str:
        return text
    if issubclass(type(text), str):
        return str.__str__(text)
    raise TypeError("not a str")


def json_value(value: object, limit: int = MAX_REPR, *, as_text: Any = safe_repr) -> object:
    """A JSON scalar as it is (exact types: subclasses cannot change how they encode);
    NaN and the infinities as the words json.dumps would write, but quoted (strict JSON has
    no such numbers); anything else as text from `as_text` (repr by default), at most
    `limit` characters.
    Text values are returned whole: the caller clips them to its own budget."""
    if value is None or value is True or value is False:
        return value
    cls = type(value)  # not isinstance(): a `__class__` property can claim to be int
    if issubclass(cls, int):
        bits = int.bit_length(cast(int, value))
        return int.__int__(cast(int, value)) if bits <= _JSON_INT_BITS else f"<int of {bits} bits>"
    if issubclass(cls, float):
        number = float.__float__(cast(float, value))
        if math.isfinite(number):
            return number
        return "NaN" if number != number else "Infinity" if number > 0 else "-Infinity"
    if issubclass(cls, str):
        return _plain(value)
    text: str = as_text(value, limit)
    return text


# json.dumps() builds a new encoder on every call, and JSONEncoder.encode() a new C encoder:
# half the cost of a parametrized test's parameters. Every value given to it is built here
# (lists and dicts of exact JSON scalars, one level of nesting), so it holds no cycle and the
# circular-reference check is not needed.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
if _make_c_encoder is not None:
    _encode = _make_c_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )

    def to_json(value: object) -> str:
        return "".join(_encode(value, 0))
else:  # pragma: no cover - an interpreter without the C accelerator

    def to_json(value: object) -> str:
        return _ENCODER.encode(value)


def json_key(value: object) -> str:
    return safe_str(value, MAX_REPR)


# Functions, builtins and plain classes have a repr that names them (and a function's
# address); only reassigning __qualname__ or __module__ would change it. packaging's suite,
# for one, parametrizes 51,000 tests with operator functions. Their text is kept (with the
# object, so that its id is not reused).
_STABLE_REPR = frozenset({types.FunctionType, types.BuiltinFunctionType, type})
_stable_reprs: dict[int, tuple[object, str]] = {}
_FAST_INT = 1 << 63


def _stable_repr(value: object) -> str:
    known = _stable_reprs.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    text = clip(safe_repr(value), MAX_REPR) or ""
    if len(_stable_reprs) < 10_000:
        _stable_reprs[id(value)] = (value, text)
    return text


def _plain_scalar(value: Any, cls: type) -> bool:
    """A value that JSON holds as it is, and that json_value() and clip() would not change."""
    return (
        (cls is str and len(value) <= MAX_REPR and value.isascii())
        or value is None
        or cls is bool
        or (cls is int and -_FAST_INT <= value < _FAST_INT)
        or (cls is float and value - value == 0.0)
    )  # finite: inf - inf and NaN are NaN


def params_json(values: Mapping[str, object]) -> str | None:
    """Parameters as a JSON object: JSON scalars as they are, others as a short repr.

    This runs for every parametrized test on the test thread: short ASCII text, small
    numbers and stable reprs take a path of a few type checks; everything else goes through
    json_value() and clip(), which the short path gives the same result as."""
    if not values:
        return None
    plain: dict[str, object] = {}
    for name, value in values.items():
        key = name if type(name) is str and len(name) <= MAX_REPR else json_key(name)
        cls = type(value)
        if _plain_scalar(value, cls):
            plain[key] = value
        elif cls in _STABLE_REPR:
            plain[key] = _stable_repr(value)
        else:
            item = json_value(value)
            plain[key] = (clip(item, MAX_REPR) or "") if type(item) is str else item
    return to_json(plain)


def properties_json(properties: Iterable[object]) -> str | None:
    """`record_property` pairs as a JSON array of `[name, value]`; an entry that is not a
    pair (user code may append anything to `user_properties`) is kept as its repr."""
    pairs: list[list[object]] = []
    name: object
    value: object
    for entry in properties:
        try:
            name, value = entry  # type: ignore[misc]  # user code may append anything
        except Exception:
            pairs.append([safe_repr(entry), None])
            continue
        pairs.append([json_key(name), json_value(value, MAX_PROPERTY_TEXT)])
    return to_json(pairs) if pairs else None
