"""The one query layer: the questions people ask after a run, answered as typed records.

The `stepflow` command and the reports are thin layers over it; it is as usable from Python::

    from pytest_stepflow.query.database import open_database
    from pytest_stepflow.query.runs import failures

    with open_database() as db:
        for step in failures(db, db.resolve("latest")):
            print(step.nodeid)

- `records.py`: the read-side records (what comes back out of storage, and what is computed);
- `database.py`: which database to read, opened read-only (`ReadSide`, `BulkReadSide`);
- `runs.py`: windows of runs, failures, one run's overview, a test's logs, slowest, trend;
- `flakiness.py`: the flakiness rule; `compare.py`: what changed between two runs;
- `history.py`: one test over runs; `artifacts.py`: where an artifact's file is;
- `summary.py`: the short summary of a run; `report_inputs.py`: what the HTML report shows;
- `errors.py`: `QueryError`, a question with no answer (an unknown test or artifact).

Storage answers data questions (`storage/reading.py`,
answered by the backend's readers: `storage/sqlite/reader.py`); the policy
(what is flaky, slower, worse) lives here. Nothing here imports pytest or the writer, and
nothing writes to the database. This file imports nothing: `storage/` imports the records,
so an eager import of the reader here would be a cycle.
"""
