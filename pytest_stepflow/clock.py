"""Wall-clock time that tests cannot freeze.

freezegun replaces `time.time` in every loaded module and time-machine patches it at the C
level, so neither `time.time()` nor `datetime.now()` can be trusted while a test runs. The
performance counter is left alone by both: we read the wall clock once, at start-up, and add
the performance counter's progress to it. The counter is kept on the instance, out of reach
of freezegun's module scan.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


class RealClock:
    __slots__ = ("_perf", "_perf_anchor", "_wall_anchor")

    def __init__(self) -> None:
        self._perf = time.perf_counter
        self._wall_anchor = time.time()
        self._perf_anchor = self._perf()

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        return self._wall_anchor + (self._perf() - self._perf_anchor)

    def iso(self, moment: float | None = None) -> str:
        """UTC ISO-8601 with microseconds and a `Z`."""
        value = self.now() if moment is None else moment
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CLOCK = RealClock()
