"""Calling stepflow's hooks (hookspecs.py) one implementation at a time.

pluggy stops at the first implementation that raises and its error does not say whose it
was; calling the implementations ourselves names the hook and the plugin, keeps the others
running, and applies each one's result only when it succeeded. Immutable records make that
cheap: an implementation cannot half-change a step, it can only return a new one.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from pluggy import HookImpl

from pytest_stepflow.model import Artifact, LogRecord, Step, SubStep
from pytest_stepflow.plugin.user_warnings import Notices
from pytest_stepflow.untrusted import safe_str, type_name

if TYPE_CHECKING:
    from pytest_stepflow.model import ExecutionStarted, ExecutionSummary
    from pytest_stepflow.substeps import Collector

PREPARE = "pytest_stepflow_step_prepare"
RECORDED = "pytest_stepflow_step_recorded"
FINISH = "pytest_stepflow_execution_finish"
_IDENTITY = ("execution_id", "nodeid", "worker", "attempt", "kind")
_JSON = {"parameters": dict, "markers": list, "properties": list}


class HookError(Exception):
    """An implementation returned something stepflow cannot use."""


def _kinds(record: type[Any]) -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field -> (accepted exact types, None allowed), from the record's annotations."""
    kinds = {}
    for field, hint in typing.get_type_hints(record).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = typing.get_args(hint) if union else (hint,)
        accepted = tuple(t for arg in args for t in _TYPES.get(arg, ()))
        if accepted:
            kinds[field] = (accepted, type(None) in args)
    return kinds


_TYPES: dict[object, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    bool: (bool,),
    float: (float, int),
}


def _bad_field(
    record: tuple[Any, ...], kinds: dict[str, tuple[tuple[type, ...], bool]]
) -> str | None:
    """The first field of `record` whose value SQLite could not store as declared."""
    for field, (accepted, optional) in kinds.items():
        value = getattr(record, field)
        if value is None and optional:
            continue
        ok = any(type(value) is kind for kind in accepted)
        if ok and type(value) is float:
            ok = math.isfinite(value)
        elif ok and type(value) is int:
            ok = -(1 << 63) <= value < 1 << 63  # what SQLite's INTEGER holds
        if not ok:
            return f"set {type_name(record)}.{field} to {type_name(value)}"
    return None


def check_step(new: object, old: Step) -> Step:
    """`new` if it is a Step stepflow can write in place of `old`; HookError otherwise.

    Checked field by field, exact types: one malformed step must not make the writer
    refuse (and spill) the whole batch it travels in."""
    if type(new) is not Step:
        raise HookError(f"returned {type_name(new)}; expected a Step, None or False")
    for field in _IDENTITY:
        if getattr(new, field) != getattr(old, field):
            raise HookError(f"changed the step's {field}, which identifies it")
    problem = _bad_field(new, _STEP_KINDS)
    if problem:
        raise HookError(problem)
    for field, kind in _JSON.items():
        text = getattr(new, field)
        if text is None:
            continue
        try:
            ok = isinstance(text, str) and isinstance(json.loads(text), kind)
        except ValueError:
            ok = False
        if not ok:
            raise HookError(f"set {field} to something that is not a JSON {kind.__name__}")
    _check_records(new.substeps, SubStep, _SUBSTEP_KINDS)
    _check_records(new.artifacts, Artifact, _ARTIFACT_KINDS)
    _check_records(new.logs, LogRecord, _LOG_KINDS)
    for index, substep in enumerate(new.substeps):
        if substep.parent is not None and not 0 <= substep.parent < index:
            raise HookError(f"gave sub-step {index} the parent {substep.parent}")
    for artifact in new.artifacts:
        if artifact.substep is not None and not 0 <= artifact.substep < len(new.substeps):
            raise HookError(f"attached an artifact to sub-step {artifact.substep}")
    return new


def _check_records(
    records: object, record_type: type[Any], kinds: dict[str, tuple[tuple[type, ...], bool]]
) -> None:
    name = record_type.__name__
    if type(records) is not tuple:
        raise HookError(f"set the step's {name} records to {type_name(records)}")
    for record in records:
        if type(record) is not record_type:
            raise HookError(f"put a {type_name(record)} among the {name} records")
        problem = _bad_field(record, kinds)
        if problem:
            raise HookError(problem)


_STEP_KINDS = _kinds(Step)
_SUBSTEP_KINDS = _kinds(SubStep)
_ARTIFACT_KINDS = _kinds(Artifact)
_LOG_KINDS = _kinds(LogRecord)


def _describe(exc: BaseException) -> str:
    text = safe_str(exc).strip().splitlines()
    return f"{type_name(exc)}: {text[0][:200]}" if text else type_name(exc)


class Extensions:
    """The hooks of one process, with the implementations known after collection cached."""

    def __init__(self, config: pytest.Config, notices: Notices) -> None:
        self.config = config
        self.notices = notices
        self.prepare_used = False  # any implementation at all: the per-step fast path
        self.recorded_used = False
        self._by_path: dict[tuple[str, object], list[HookImpl]] = {}

    def refresh(self) -> None:
        """After collection every conftest.py is registered: see who implements what."""
        hook = self.config.hook
        self.prepare_used = bool(getattr(hook, PREPARE).get_hookimpls())
        self.recorded_used = bool(getattr(hook, RECORDED).get_hookimpls())
        self._by_path.clear()

    def finish_used(self) -> bool:
        return bool(self._impls(FINISH, None))

    def _impls(self, name: str, item: pytest.Item | None) -> list[HookImpl]:
        """Call order; for an item, only the conftest.py files that apply to its path."""
        key = (name, item.path if item is not None else None)
        impls = self._by_path.get(key)
        if impls is None:
            relay = item.ihook if item is not None else self.config.hook
            impls = self._by_path[key] = [
                impl
                for impl in reversed(getattr(relay, name).get_hookimpls())
                if not (impl.wrapper or impl.hookwrapper)
            ]
        return impls

    def _call(
        self,
        name: str,
        kwargs: dict[str, Any],
        item: pytest.Item | None = None,
        config: pytest.Config | None = None,
    ) -> Iterator[tuple[HookImpl, Any]]:
        """(implementation, result) of each implementation that did not raise."""
        for impl in self._impls(name, item):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except pytest.exit.Exception:
                raise
            except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
                self.failed(name, impl, exc, config)
                continue
            yield impl, result

    def failed(
        self,
        name: str,
        impl: HookImpl,
        exc: BaseException | str,
        config: pytest.Config | None = None,
    ) -> None:
        what = exc if isinstance(exc, str) else f"raised {_describe(exc)}"
        code = getattr(impl.function, "__code__", None)
        where = (code.co_filename, code.co_firstlineno) if code is not None else None
        self.notices.add(
            f"hook {name} of plugin {impl.plugin_name!r} {what}; its changes were not applied",
            every=False,
            config=config,
            where=where,
        )

    # ---- the four hooks ------------------------------------------------------------------

    def execution_start(self, execution: ExecutionStarted) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        name = "pytest_stepflow_execution_start"
        kwargs = {"config": self.config, "execution": execution}
        for impl, result in self._call(name, kwargs, config=self.config):
            if result is None:
                continue
            try:
                if not isinstance(result, dict):
                    raise HookError(f"returned {type_name(result)}; expected a dict or None")
                # Copied through JSON now: what the plugin does with its dict later, or a
                # value JSON cannot hold (NaN, a 5,000-digit int), must not reach the row.
                plain = json.loads(json.dumps(result, ensure_ascii=False, allow_nan=False))
            except Exception as exc:
                self.failed(
                    name, impl, f"returned unusable metadata ({_describe(exc)})", self.config
                )
                continue
            merged.update(plain)
        return merged

    def step_prepare(
        self, step: Step, item: pytest.Item | None, collector: Collector | None
    ) -> Step | None:
        """The step as the implementations leave it; None when one vetoed it."""
        kwargs: dict[str, Any] = {"step": step, "item": item}
        for impl in self._impls(PREPARE, item):
            mark = len(collector.artifacts) if collector is not None else 0
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
                if result is False:
                    return None
                if result is not None and result is not True:
                    kwargs["step"] = check_step(result, kwargs["step"])
            except pytest.exit.Exception:
                raise
            except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
                if collector is not None:  # what it attached goes with its other changes
                    del collector.artifacts[mark:]
                self.failed(PREPARE, impl, exc)
        new: Step = kwargs["step"]
        return new

    def step_recorded(self, step: Step, item: pytest.Item | None) -> None:
        for _ in self._call(RECORDED, {"step": step, "item": item}, item):
            pass

    def execution_finish(self, summary: ExecutionSummary) -> None:
        kwargs = {"config": self.config, "summary": summary}
        for _ in self._call(FINISH, kwargs, config=self.config):
            pass
