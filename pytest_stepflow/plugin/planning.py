"""History-driven runs: `--stepflow-splits N --stepflow-group K` runs shard K of N, and
`--stepflow-order` reorders what is left; both from one read of the recorded history.

The split and the order are the query layer's (query/shards.py, query/order.py, read by
query/run_history.py); here the collection is narrowed to one shard the way `-k`/`-m`
narrow it (`pytest_deselected`), then reordered, after every other plugin, so that the
shards split what the other options selected.

Wherever tests are collected the plan is made: in a plain session, and under xdist in
every worker, each of which must keep the same tests in the same order (xdist refuses
workers whose collections differ). It is the same: the plan depends only on the node ids
and the history as of one moment, the anchor, which the xdist controller gives to its
workers (query/run_history.py). The controller collects nothing; its header says the
workers plan, and its summary repeats the first worker's line.

Reading the history imports the database driver into pytest's process, which a recording
session otherwise leaves to its writer process; it happens once, at collection, and only
with these options.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_stepflow.plugin.execution import display_path
from pytest_stepflow.query.run_history import LAST_RUNS
from pytest_stepflow.storage.location import Location, SqliteLocation
from pytest_stepflow.text import duration_text

if TYPE_CHECKING:
    from pytest_stepflow.query.order import Ordered
    from pytest_stepflow.query.run_history import RecentHistory
    from pytest_stepflow.query.shards import Split

ANCHOR_KEY = "stepflow_plan_anchor"  # controller -> worker, in workerinput
LINE_KEY = "stepflow_plan_line"  # worker -> controller, in workeroutput


class Planner:
    """Deselects the other shards' tests, orders the rest, and says what it did."""

    def __init__(
        self,
        config: pytest.Config,
        *,
        split: tuple[int, int] | None,
        how: str | None,
        location: Location,
        run_group: str | None,
        controller: bool,
        ungrouped: bool,
    ) -> None:
        self.config = config
        self.split_choice = split
        self.how = how
        self.location = location
        self.run_group = run_group
        self.controller = controller
        self.ungrouped = ungrouped  # recording shards without a run group (see describe)
        workerinput = getattr(config, "workerinput", None)
        self.anchor: float = (
            float(workerinput[ANCHOR_KEY])
            if workerinput and ANCHOR_KEY in workerinput
            else time.time()
        )
        self.split: Split | None = None
        self.ordered: Ordered | None = None
        self.problem: str | None = None
        self.worker_line: str | None = None  # on a controller, from its first worker

    def what(self) -> str:
        parts = []
        if self.split_choice is not None:
            parts.append(f"shard {self.split_choice[0]}/{self.split_choice[1]}")
        if self.how is not None:
            parts.append(f"order {self.how}")
        return ", ".join(parts)

    def pytest_report_header(self) -> str:
        if self.controller:
            return (
                f"stepflow: {self.what()}, planned by each xdist worker from the history as "
                "of this session's start (the same plan on every worker)"
            )
        where = (
            display_path(self.location.path)
            if isinstance(self.location, SqliteLocation)
            else self.location.describe()  # the password masked
        )
        return (
            f"stepflow: planned from the last {LAST_RUNS} runs of each test in {where}: "
            f"{self.what()}"
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[ANCHOR_KEY] = self.anchor

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        line = getattr(node, "workeroutput", {}).get(LINE_KEY)
        if self.worker_line is None and isinstance(line, str):
            self.worker_line = line

    # The outermost wrapper (tryfirst, and registered after pytest's own and entry-point
    # plugins): its code after `yield` runs after every other plugin's selection and order
    # (-k/-m, --lf, --ff/--nf and pytest-randomly are wrappers too), so that the shards split
    # what was selected and the order is the last word (ties keep the order it was given).
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        yield
        self._plan(config, items)

    def _plan(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        from pytest_stepflow.query.run_history import read_recent

        history = read_recent(
            self.location,
            [item.nodeid for item in items],
            anchor=self.anchor,
            group=self.run_group,
        )
        self.problem = history.problem
        if self.split_choice is not None:
            self._keep_shard(config, items, history)
        if self.how is not None:
            from pytest_stepflow.query.order import order

            self.ordered = order([item.nodeid for item in items], self.how, history.results)
            items[:] = [items[i] for i in self.ordered.positions]
        if hasattr(config, "workeroutput"):
            config.workeroutput[LINE_KEY] = self.describe()

    def _keep_shard(
        self, config: pytest.Config, items: list[pytest.Item], history: RecentHistory
    ) -> None:
        from pytest_stepflow.query.shards import split

        assert self.split_choice is not None
        group, splits = self.split_choice
        self.split = split([item.nodeid for item in items], splits, history.durations())
        keep = set(self.split.shards[group - 1])
        deselected = [item for item in items if item.nodeid not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.nodeid in keep]

    def pytest_report_collectionfinish(self) -> str | list[str] | None:
        if self.controller:
            return None
        return self.describe()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.controller and self.worker_line:
            terminalreporter.write_line(self.worker_line)

    def describe(self) -> str:
        """One line: the shard and how it was chosen, the order and what it put first."""
        parts = [p for p in (self._split_text(), self._order_text()) if p]
        line = "stepflow: " + "; ".join(parts)
        if self.problem is not None:
            line += f" (no history: {self.problem})"
        elif self.ungrouped:
            line += (
                " (no run group: shards run one after another read each other's steps; "
                "give them the same --stepflow-run-group)"
            )
        return line

    def _split_text(self) -> str | None:
        result, choice = self.split, self.split_choice
        if result is None or choice is None:
            return None
        index = choice[0] - 1
        head = f"shard {choice[0]}/{choice[1]}"
        count = len(result.shards[index])
        total = len(result.expected)
        if not result.by_history:
            why = "" if self.problem else " (no recorded durations for these tests)"
            return f"{head} by count: {count:,} of {total:,} tests{why}"
        return (
            f"{head} by recorded durations: {count:,} of {total:,} tests, expected "
            f"{duration_text(result.load(index))} (ideal {duration_text(result.ideal)}; "
            f"{result.known:,} of {total:,} tests seen before)"
        )

    def _order_text(self) -> str | None:
        ordered, how = self.ordered, self.how
        if ordered is None or how is None:
            return None
        failing = f"{ordered.failing:,} with recent failures" if ordered.failing else ""
        new = f"{ordered.new:,} never seen" if ordered.new else ""
        first = {
            "failed-first": failing,
            "new-first": new,
            "slowest-first": "the longest expected",
            "risk": ", then ".join(p for p in (failing, new) if p) or "the longest expected",
        }[how]
        return f"order {how}: " + (f"{first} first" if first else "nothing to move, pytest's order")
