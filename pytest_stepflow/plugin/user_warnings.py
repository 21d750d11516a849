"""Problems that must not fail a test but must not go unseen: a refused artifact, a hook
implementation that raised.

Each is a pytest warning where it happens (inside the test when there is one, so pytest names
the test and xdist forwards it) and, counted, a line of stepflow's terminal summary. Workers
send their counts to the controller, which prints the lines for the whole run.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping

import pytest


class StepflowWarning(UserWarning):
    """Something stepflow could not record; the test itself is not affected."""


def _caller_level() -> int:
    """The stack level of the first frame outside pytest-stepflow (the user's call)."""
    frame = sys._getframe(1)  # the caller, which calls warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "pytest_stepflow"
    ):
        frame = frame.f_back
        level += 1
    return level


def warn(
    message: str, config: pytest.Config | None = None, where: tuple[str, int] | None = None
) -> None:
    """Issue a StepflowWarning that never raises, even under `-W error`: a warning filter may
    hide it (`ignore`) but must not turn a recording problem into a failed test.

    It points at `where` (file, line: e.g. a hook implementation) or else at the first
    caller outside pytest-stepflow (the test's `attach()` call)."""
    warning = StepflowWarning(message)
    try:
        if config is not None:  # outside a test: shown in pytest's warnings summary
            config.issue_config_time_warning(warning, stacklevel=2)
        elif where is not None:
            warnings.warn_explicit(warning, StepflowWarning, where[0], where[1])
        else:
            warnings.warn(warning, stacklevel=_caller_level())
    except StepflowWarning:
        pass  # `-W error`: the summary line still says it


class Notices:
    """Counted problems, by the text of their summary line (insertion order kept)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(
        self,
        summary: str,
        detail: str | None = None,
        *,
        every: bool = True,
        config: pytest.Config | None = None,
        where: tuple[str, int] | None = None,
    ) -> None:
        """Count `summary`; warn with `detail` each time (`every`) or only the first time."""
        first = summary not in self.counts
        self.counts[summary] = self.counts.get(summary, 0) + 1
        if every or first:
            warn(detail or summary, config, where)

    def merge(self, other: Mapping[str, int]) -> None:
        for summary, count in other.items():
            self.counts[summary] = self.counts.get(summary, 0) + int(count)

    def lines(self) -> list[str]:
        return [
            f"stepflow: warning: {summary}" + (f" ({count} times)" if count > 1 else "")
            for summary, count in self.counts.items()
        ]
