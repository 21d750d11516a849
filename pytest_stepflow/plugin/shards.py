"""`--stepflow-splits N --stepflow-group K`: run only shard K of N duration-balanced shards.

The split itself is the query layer's (query/shards.py); here the collection is narrowed
to one shard the way `-k`/`-m` narrow it (`pytest_deselected`), after them (trylast), so
that the shards split what the other options selected.

Wherever tests are collected the split is computed: in a plain session, and under xdist in
every worker, each of which must keep exactly the same tests (xdist refuses workers whose
collections differ). It is: the split depends only on the node ids and the recorded
history, and the steps of the run group now running (its other shards, which may be
writing while this one collects) are left out of that history. The xdist controller
collects nothing; it only says in the header that the workers split.

Reading the history imports the database driver into pytest's process, which a recording
session otherwise leaves to its writer process; it happens once, at collection, and only
with --stepflow-splits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_stepflow.storage.location import Location
from pytest_stepflow.text import duration_text

if TYPE_CHECKING:
    from pytest_stepflow.query.shards import Split


class Sharding:
    """Deselects the other shards' tests and reports the split."""

    def __init__(
        self,
        group: int,
        splits: int,
        location: Location,
        exclude_group: str | None,
        *,
        controller: bool = False,
    ) -> None:
        self.group = group
        self.splits = splits
        self.location = location
        self.exclude_group = exclude_group
        self.controller = controller
        self.split: Split | None = None

    def pytest_report_header(self) -> str | None:
        if not self.controller:
            return None
        return (
            f"stepflow: shard {self.group}/{self.splits}, split by each xdist worker from "
            "the recorded durations (the same split on every worker)"
        )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        from pytest_stepflow.query.shards import read_history, split

        nodeids = [item.nodeid for item in items]
        history, problem = read_history(self.location, nodeids, exclude_group=self.exclude_group)
        self.split = split(nodeids, self.splits, history, problem)
        keep = set(self.split.shards[self.group - 1])
        selected = [item for item in items if item.nodeid in keep]
        deselected = [item for item in items if item.nodeid not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected

    def pytest_report_collectionfinish(self) -> str | None:
        return self.describe()

    def describe(self) -> str | None:
        """One line: which shard, how it was chosen, and its expected time."""
        result = self.split
        if result is None:
            return None
        index = self.group - 1
        head = f"stepflow: shard {self.group}/{self.splits}"
        count = len(result.shards[index])
        total = len(result.expected)
        if not result.by_history:
            why = result.problem or "no recorded durations for these tests"
            return f"{head} by count: {count:,} of {total:,} tests ({why})"
        return (
            f"{head} by recorded durations: {count:,} of {total:,} tests, expected "
            f"{duration_text(result.load(index))} (ideal {duration_text(result.ideal)}; "
            f"{result.known:,} of {total:,} tests seen before)"
        )
