"""A test that forks (`os.fork()`, multiprocessing's "fork" start method) while we record.

Two promises: the child never sends anything to the parent's writer process (it inherits the
writer client and its pipe, so it must not use them), and the fork itself behaves as it would
without stepflow. Python 3.12 warns (`DeprecationWarning: This process is multi-threaded, use
of fork() may lead to deadlocks in the child`) whenever a process with more than one thread
forks: our sender thread would add that warning to every forking test, or fail it under
`filterwarnings = error`. So before a fork every participant (writer_client.py) stops its
thread, and after it the parent starts it again. `subprocess` does not call these hooks and
needs none. The writer process itself never forks.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Protocol

PAUSE_TIMEOUT = 2.0  # a writer stuck in a long lock wait is left running: the fork goes on


class Participant(Protocol):
    def pause(self, timeout: float) -> int: ...  # how many threads it stopped
    def resume(self) -> None: ...
    def forget(self) -> None: ...


_participants: weakref.WeakSet[Participant] = weakref.WeakSet()
_lock = threading.Lock()


def register(participant: Participant) -> None:
    with _lock:
        _participants.add(participant)


def unregister(participant: Participant) -> None:
    with _lock:
        _participants.discard(participant)


# An exception in a fork hook would reach sys.unraisablehook, which pytest turns into a
# warning in the running test: the hooks never raise.


def _before() -> None:
    if not _participants:
        return
    threads = os_threads()
    stopped = 0
    for participant in list(_participants):
        with contextlib.suppress(Exception):
            stopped += participant.pause(PAUSE_TIMEOUT)
    # join() returns when a thread's Python state is gone; the OS thread takes a few more
    # microseconds to exit, and Python counts the OS's threads (/proc) after the fork.
    deadline = time.monotonic() + 0.2
    while stopped and os_threads() > threads - stopped and time.monotonic() < deadline:
        time.sleep(0.0002)


def os_threads() -> int:
    """The process's threads as the kernel counts them (Linux), else 0."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return 0


def _after_in_parent() -> None:
    for participant in list(_participants):
        with contextlib.suppress(Exception):
            participant.resume()


def _after_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # it may have been held by a thread that does not exist here
    for participant in list(_participants):
        with contextlib.suppress(Exception):
            participant.forget()
    _participants.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
