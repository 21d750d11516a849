"""--stepflow-attach-on-failure: files of a failed test's tmp_path, attached automatically."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_stepflow.substeps import Collector

MAX_AUTO_ATTACH = 100  # files per failed test attempt


def tmp_path_of(item: pytest.Item) -> Path | None:
    """The tmp_path this test (or one of its fixtures) got; never creates one."""
    funcargs = getattr(item, "funcargs", None) or {}
    value = funcargs.get("tmp_path")
    if value is None:
        # A fixture failed before pytest stored the test's arguments: the fixture
        # definition still holds its value until the test's teardown.
        info = getattr(item, "_fixtureinfo", None)
        definitions = getattr(info, "name2fixturedefs", {}).get("tmp_path") or ()
        cached = getattr(definitions[-1], "cached_result", None) if definitions else None
        value = cached[0] if cached else None
    return value if isinstance(value, Path) else None


class FailureAttacher:
    """--stepflow-attach-on-failure: the matching files of a failed test's tmp_path.

    A plugin of its own, registered only when globs are given. It works when pytest makes
    the failing report, while the test's fixtures are alive: tmp_path's teardown may delete
    the folder, and pytest-rerunfailures logs an attempt's reports only after its teardown.
    """

    def __init__(self, collector: Collector, globs: tuple[str, ...]) -> None:
        self.collector = collector
        self.globs = globs
        self._attempt = -1  # the collector's attempt already handled

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the final report (xfail)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        collector = self.collector
        if report.failed and collector.active and self._attempt != collector.attempt:
            self._attempt = collector.attempt  # once per attempt
            self.attach(item)
        return report

    def attach(self, item: pytest.Item) -> None:
        tmp = tmp_path_of(item)
        if tmp is None or not tmp.is_dir():
            return
        found: dict[Path, None] = {}
        for pattern in self.globs:
            for path in sorted(tmp.glob(pattern)):
                if path.is_file():
                    found.setdefault(path)
        attached = {artifact.name for artifact in self.collector.artifacts}
        for path in list(found)[:MAX_AUTO_ATTACH]:
            name = path.relative_to(tmp).as_posix()
            if name in attached:  # the test attached it itself
                continue
            try:
                self.collector.attach(path, name, None, inside=False)
            except OSError:  # removed meanwhile: nothing to attach
                continue
