"""Fixtures that exist only while a run is recorded (registered by plugin.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_stepflow.plugin.stash_keys import recording_key


@pytest.fixture(scope="session")
def record_testsuite_property(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """pytest's `record_testsuite_property`, also stored in the execution's metadata
    (`testsuite_properties`), from xdist workers too. With --junitxml the property still
    goes to the XML file, exactly as pytest's own fixture does it."""
    __tracebackhide__ = True
    junit = _junitxml_recorder(request)
    recording = request.config.stash.get(recording_key, None)

    def record(name: str, value: object) -> None:
        __tracebackhide__ = True
        if not isinstance(name, str):  # pytest's own check, with its message
            raise TypeError(f"name parameter needs to be a string, but {type(name).__name__} given")
        if junit is not None:
            junit(name, value)
        if recording is not None:
            recording.testsuite_property(name, value)

    return record


def _junitxml_recorder(request: pytest.FixtureRequest) -> Callable[[str, object], None] | None:
    """What pytest's own fixture would do: add the property to the XML being written."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest without it
        return None
    xml = request.config.stash.get(xml_key, None)
    return None if xml is None else xml.add_global_property
