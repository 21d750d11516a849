"""Where a stored artifact's file is."""

from __future__ import annotations

from pathlib import Path

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.query.records import StoredArtifact
from pytest_stepflow.storage.reading import ReadSide


def artifact_file(db: ReadSide, artifact_id: int) -> tuple[StoredArtifact, Path]:
    """The artifact `artifact_id` and its file in the artifact store; QueryError when the
    database has no such artifact or its stored path leads outside the store."""
    found = db.artifacts(artifact_id=artifact_id)
    if not found:
        raise QueryError(f"no artifact {artifact_id} in {db.name}; see `stepflow artifacts`")
    db.fetch_artifacts(found)
    path = stored_file(db.artifacts_home, found[0].stored_path)
    if path is None:
        raise QueryError(
            f"artifact path {found[0].stored_path!r} is outside "
            f"{(db.artifacts_home / ARTIFACTS_DIR).resolve()}; refusing it"
        )
    return found[0], path
