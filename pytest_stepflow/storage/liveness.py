"""Whether the process behind a `running` execution is gone: pid on this host, heartbeat age
everywhere (no backend can see another host's pids)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from pytest_stepflow.timestamps import parse_iso


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# A heartbeat older than this means the process is gone even if its pid was reused.
STALE_SAME_HOST = timedelta(minutes=10)
# On another host we cannot look at pids; a heartbeat is written every few seconds.
STALE_OTHER_HOST = timedelta(hours=1)


def is_gone(run_host: str, pid: int, heartbeat: str, host: str, now: datetime) -> bool:
    """Whether the process of a `running` execution is gone, seen from `host` at `now`.

    `heartbeat` is the run's last heartbeat (else its start) as ISO-8601 text. Same host: the
    pid is gone (or the heartbeat is very old, in case the pid was reused). Other hosts: only
    a heartbeat older than an hour. Pure apart from the pid probe; `stepflow doctor` shares it.
    """
    age = now - parse_iso(heartbeat)
    if run_host == host:
        return (pid != os.getpid() and not pid_alive(pid)) or age > STALE_SAME_HOST
    return age > STALE_OTHER_HOST
