"""Refuse a command line on which a stepflow option value would move pytest's rootdir.

pytest finds the rootdir and the ini file before entry-point plugins register their options,
so in `--stepflow-db ../elsewhere/x.db` the early parse takes `../elsewhere/x.db` for a test
path. Once that file exists, the rootdir becomes an ancestor of both folders, the project's
`pytest.ini` or `pyproject.toml` is not read, and its `addopts`, markers, `filterwarnings`
and `testpaths` are silently dropped. A plugin cannot change that early parse, so when our
options are known we repeat pytest's search without those words and stop with a usage error
if the answer differs. A database or report path that does not exist yet is checked as if it
did (we are about to create it), so the same command fails the same way on every run rather
than working once and changing meaning the next time.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pytest_stepflow.environment import redact_credentials
from pytest_stepflow.plugin.settings import DB_ENV, DB_OPTION, OPTIONS

_PATH_OPTIONS = frozenset({"db", "html"})  # files stepflow creates: checked as if they exist
_VALUE_FLAGS = {f"--stepflow-{o.name}": o.name for o in OPTIONS if not o.flag}


class Separate(NamedTuple):
    position: int  # of the value in the argument list
    flag: str
    value: str


def separate_values(args: Sequence[str]) -> list[Separate]:
    """Values of stepflow options written as their own word (`--stepflow-db PATH`)."""
    found = []
    for i, word in enumerate(args[:-1]):
        if word == "--":  # everything after it is a test path
            break
        if word in _VALUE_FLAGS:
            found.append(Separate(i + 1, word, args[i + 1]))
    return found


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _setup(positionals: list[str], ns: Any, invocation_dir: Path) -> tuple[Path, Path | None]:
    """pytest's own rootdir and ini file search (its signature changed within pytest 8)."""
    from _pytest.config.findpaths import determine_setup

    offered: dict[str, Any] = {
        "inifile": ns.inifilename,
        "args": positionals,
        "rootdir_cmd_arg": ns.rootdir or None,
        "invocation_dir": invocation_dir,
        "override_ini": getattr(ns, "override_ini", None),
    }
    accepted = inspect.signature(determine_setup).parameters
    result = determine_setup(**{k: v for k, v in offered.items() if k in accepted})
    return result[0], result[1]


def check_separate_values(config: pytest.Config, parser: pytest.Parser) -> None:
    """Raise UsageError when a separate-word stepflow value changes the rootdir or ini file."""
    # What pytest's early parse saw: PYTEST_ADDOPTS, then the command line (ini addopts are
    # added only after the ini file is found, so they cannot move it).
    args = [
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *(str(a) for a in config.invocation_params.args),
    ]
    found = separate_values(args)
    if not found:
        return
    invocation_dir = Path(config.invocation_params.dir)
    ns, unknown = parser.parse_known_and_unknown_args(args)
    right = _setup([*ns.file_or_dir, *unknown], ns, invocation_dir)
    wrong = _setup(
        [*_early(args, ns.file_or_dir, found, invocation_dir), *unknown], ns, invocation_dir
    )
    if wrong == right:
        return
    culprit = next(
        (
            s
            for s in found
            if len(found) > 1
            and _setup(
                [*_early(args, ns.file_or_dir, [s], invocation_dir), *unknown], ns, invocation_dir
            )
            != right
        ),
        found[0],
    )
    raise pytest.UsageError(_message(culprit, right, wrong, invocation_dir))


def _early(
    args: Sequence[str],
    positionals: Sequence[str],
    separate: Sequence[Separate],
    invocation_dir: Path,
) -> list[str]:
    """The early parse's positionals, in order: the real ones with our values among them."""
    values = {s.position: s for s in separate}
    early: list[str] = []
    rest = list(positionals)
    for i, word in enumerate(args):
        value = values.get(i)
        if value is not None:
            path = invocation_dir / os.path.expanduser(value.value)
            if _VALUE_FLAGS[value.flag] in _PATH_OPTIONS:
                path = _nearest_existing(path)
            early.append(str(path))
        elif rest and word == rest[0]:
            early.append(rest.pop(0))
    return [*early, *rest]


def _message(
    culprit: Separate,
    right: tuple[Path, Path | None],
    wrong: tuple[Path, Path | None],
    invocation_dir: Path,
) -> str:
    flag, value = culprit.flag, culprit.value
    exists = (invocation_dir / os.path.expanduser(value)).exists()
    value = redact_credentials(value)  # a server URL may hold a password
    fix = f"write {flag}={value}" + (f" or set {DB_ENV}" if flag == DB_OPTION else "")
    verb = "uses" if exists else f"would use, once {value} exists,"
    return (
        f"{flag} {value}: pytest takes a value written as a separate word for a test path "
        f"while it looks for the rootdir and ini file (before plugins' options are known), "
        f"so it {verb} rootdir {wrong[0]} ({_ini(wrong[1])}) instead of {right[0]} "
        f"({_ini(right[1])}), ignoring the project's configuration; {fix}"
    )


def _ini(path: Path | None) -> str:
    return f"ini file {path}" if path else "no ini file"
