"""What test code calls: `step()` and `attach()`, also offered by the `stepflow` fixture.

Both are no-ops unless a test is being recorded (`--stepflow`), so test code and helpers can
use them unconditionally: the cost is a global lookup and a flag test. A decorated function
decides at each call, since it is usually decorated (imported) before any test runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from pytest_stepflow import substeps
from pytest_stepflow.model import Artifact
from pytest_stepflow.substeps import Entry
from pytest_stepflow.untrusted import params_json, safe_str

if TYPE_CHECKING:
    from pytest_stepflow.artifacts import Source

F = TypeVar("F", bound=Callable[..., Any])
_Opened = tuple[Entry, Token[Entry | None]]


def _format(title: str, values: Mapping[str, object]) -> str:
    """The title with `{name}` fields filled in; left as written when it does not fit."""
    if "{" not in title:
        return title
    try:
        return safe_str(title.format_map(values))
    except KeyboardInterrupt:
        raise
    except BaseException:  # a field's __format__ is user code
        return title


class StepContext:
    """A sub-step: a context manager, or a decorator that records each call."""

    __slots__ = ("_stack", "parameters", "title")

    def __init__(self, title: str, parameters: dict[str, object]) -> None:
        self.title = title
        self.parameters = parameters
        self._stack: list[tuple[Entry, Token[Entry | None]]] | None = None

    def __enter__(self) -> None:
        collector = substeps.current
        if collector is None or not collector.active:
            return
        entry = collector.open(
            "step", _format(self.title, self.parameters), params_json(self.parameters)
        )
        if entry is not None:
            if self._stack is None:
                self._stack = []
            self._stack.append((entry, substeps._open.set(entry)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._stack:
            return
        entry, token = self._stack.pop()
        substeps.Collector.close(entry, exc)
        _reset(token)

    def __call__(self, func: F) -> F:
        signature: list[inspect.Signature] = []  # computed at the first recorded call

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Opened | None:
            collector = substeps.current
            if collector is None or not collector.active:
                return None
            if not signature:
                signature.append(inspect.signature(func))
            try:
                bound = signature[0].bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
            except TypeError:  # the call itself is wrong: let the function say so
                arguments = {}
            title = _format(self.title, {**self.parameters, **arguments})
            shown = {k: v for k, v in arguments.items() if k not in ("self", "cls")}
            entry = collector.open("step", title, params_json({**self.parameters, **shown}))
            return None if entry is None else (entry, substeps._open.set(entry))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                opened = begin(args, kwargs)
                if opened is None:
                    return await func(*args, **kwargs)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    substeps.Collector.close(opened[0], exc)
                    raise
                finally:
                    _reset(opened[1])
                substeps.Collector.close(opened[0], None)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            opened = begin(args, kwargs)
            if opened is None:
                return func(*args, **kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                substeps.Collector.close(opened[0], exc)
                raise
            finally:
                _reset(opened[1])
            substeps.Collector.close(opened[0], None)
            return result

        return cast(F, wrapper)


def _reset(token: Token[Entry | None]) -> None:
    with contextlib.suppress(ValueError):  # exited in another context (a task switched)
        substeps._open.reset(token)


@overload
def step(title: str, /, **parameters: object) -> StepContext: ...
@overload
def step(title: F, /) -> F: ...
def step(title: str | F, /, **parameters: object) -> StepContext | F:
    """A named sub-step of the running test.

    ``with step("log in", user="bob"):`` records the block: its title, parameters, start,
    duration, outcome (passed; failed with the exception text; skipped by ``pytest.skip``)
    and the sub-steps opened inside it. As a decorator, ``@step("add {a} and {b}")`` records
    every call, with the call's arguments filled into the title and kept as parameters;
    ``@step`` alone uses the function's name. Without ``--stepflow`` it records nothing.
    """
    if callable(title):
        name = safe_str(getattr(title, "__name__", None) or "step")
        return StepContext(name.replace("_", " "), {})(title)
    return StepContext(safe_str(title), dict(parameters))


def attach(source: Source, name: str | None = None, mime: str | None = None) -> Artifact | None:
    """Attach a file to the running test (and to the sub-step it runs in).

    `source` is a path (``pathlib.Path``; a ``str`` is text, not a path), bytes, or text.
    The content goes to the artifact store beside the database (stored once however often it
    is attached); `name` defaults to the file's name, `mime` is guessed from the name. A path
    that does not exist raises FileNotFoundError. What a limit refuses is reported as a
    warning and returns None; the test goes on. Without ``--stepflow`` it returns None.
    """
    collector = substeps.current
    if collector is None:
        return None
    if not collector.active:
        if collector.notices is not None:
            collector.notices.add("attach() calls outside a test were not recorded")
        return None
    return collector.attach(source, name, mime)


class Stepflow:
    """The `stepflow` fixture: `stepflow.step(...)`, `stepflow.attach(...)`."""

    step = staticmethod(step)
    attach = staticmethod(attach)

    def __repr__(self) -> str:
        return f"<stepflow fixture: {'recording' if self.recording else 'not recording'}>"

    @property
    def recording(self) -> bool:
        """True while this test is being recorded."""
        collector = substeps.current
        return collector is not None and collector.active


STEPFLOW = Stepflow()
