"""The payloads an xdist controller and its workers exchange (xdist_contract.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pytest_stepflow.plugin.settings import Settings
from pytest_stepflow.plugin.xdist_contract import (
    KEY,
    WorkerInput,
    WorkerOutput,
    received_input,
    received_output,
    send_input,
    send_output,
    worker_id,
)
from pytest_stepflow.storage.location import PostgresqlLocation, SqliteLocation

SETTINGS = Settings(
    location=SqliteLocation(Path("/tmp/x/stepflow.db")),
    name="nightly",
    tags={"team": "a"},
    batch_size=7,
    flush_interval=0.5,
    capture="failed",
    max_output=4096,
    retry_budget=3.0,
    max_artifact_size=1 << 20,
    max_artifact_total=3 << 20,
    attach_on_failure=("*.png",),
)


def test_input_round_trip_through_plain_data() -> None:
    sent = WorkerInput.for_workers(SETTINGS, "exec-1", workers=3)
    node = SimpleNamespace(workerinput={"workerid": "gw1"})
    send_input(node, sent)
    # execnet carries plain data only: what was put there survives JSON unchanged.
    assert json.loads(json.dumps(node.workerinput)) == node.workerinput
    config = SimpleNamespace(workerinput=node.workerinput)
    received = received_input(config)
    assert received == sent
    assert worker_id(config) == "gw1"


def test_input_gives_the_worker_the_controllers_settings_and_its_share() -> None:
    settings = WorkerInput.for_workers(SETTINGS, "exec-1", workers=3).settings()
    assert settings.max_artifact_total == 1 << 20  # a third of the run's total
    assert (settings.location, settings.batch_size, settings.capture) == (
        SETTINGS.location,
        7,
        "failed",
    )
    assert settings.attach_on_failure == ("*.png",)
    assert settings.name is None and settings.tags == {}  # the execution's: the controller's


def test_input_carries_a_server_location_whole() -> None:
    """A server URL (password and schema included) and its local folder reach the worker."""
    location = PostgresqlLocation(
        "postgresql://ci:pw@db.example:5432/tests", "nightly", Path("/work/.stepflow")
    )
    sent = WorkerInput.for_workers(
        Settings(**{**SETTINGS.__dict__, "location": location}), "exec-1", workers=2
    )
    received = WorkerInput.from_dict(json.loads(json.dumps(sent.to_dict())))
    assert received.settings().location == location


def test_input_note_only_when_the_total_is_split() -> None:
    assert WorkerInput.for_workers(SETTINGS, "e", workers=1).artifact_total_note == ""
    assert WorkerInput.for_workers(SETTINGS, "e", workers=0).max_artifact_total == 3 << 20
    note = WorkerInput.for_workers(SETTINGS, "e", workers=2).artifact_total_note
    assert "per xdist worker" in note and "2 workers" in note


def test_no_input_when_the_controller_sent_none() -> None:
    assert received_input(SimpleNamespace(workerinput={"workerid": "gw0"})) is None


def test_output_round_trip() -> None:
    config = SimpleNamespace(workeroutput={})
    sent = WorkerOutput(stats={"steps": 3, "spill_files": []}, vetoed=1, notices={"n": 2})
    send_output(config, sent)
    assert json.loads(json.dumps(config.workeroutput)) == config.workeroutput
    assert received_output(SimpleNamespace(workeroutput=config.workeroutput)) == sent


def test_no_output_from_a_worker_that_died() -> None:
    assert received_output(SimpleNamespace()) is None  # xdist sets none for a crashed node
    assert received_output(SimpleNamespace(workeroutput={KEY: {}})) is None
