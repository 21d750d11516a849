"""Where the session's recording is kept in `config.stash`.

A module of its own so that the entry point (plugin.py, which stores it) and the fixtures
(which read it) both import it at the top, without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_stepflow.plugin.recording import Recording

recording_key: pytest.StashKey[Recording] = pytest.StashKey()
