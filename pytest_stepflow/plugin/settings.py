"""Options: declared once as data, resolved once (CLI > environment > ini > default).

Every option exists as `--stepflow-x` and ini `stepflow_x` with the same dest; CLI defaults are
None so that "not given" is distinguishable from "given the default".
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_stepflow.environment import ci_run_group
from pytest_stepflow.limits import DEFAULT_MAX_ARTIFACT_SIZE, DEFAULT_MAX_ARTIFACT_TOTAL, GIB, MIB
from pytest_stepflow.locations import DB_ENV as DB_ENV  # cmdline.py imports it from here
from pytest_stepflow.locations import DEFAULT_DB
from pytest_stepflow.plugin.execution import display_path
from pytest_stepflow.storage.location import (
    ACCEPTED,
    Location,
    LocationError,
    PostgresqlLocation,
    SqliteLocation,
    parse_location,
)

CAPTURE_CHOICES = ("all", "failed", "none")
RUN_GROUP_ENV = "STEPFLOW_RUN_GROUP"
SHARD_ENV = "STEPFLOW_SHARD"
SPLITS_ENV = "STEPFLOW_SPLITS"
GROUP_ENV = "STEPFLOW_GROUP"
# Options with an environment twin, read between the command line and the ini file: the
# database, and what CI sets per job (the pipeline's group, the job's shard).
# The balanced shards' count and index: set per CI job too.
_ENVIRONMENT = {
    "db": DB_ENV,
    "run-group": RUN_GROUP_ENV,
    "shard": SHARD_ENV,
    "splits": SPLITS_ENV,
    "group": GROUP_ENV,
}
MAX_GROUP_TEXT = 200  # characters of a run group's or shard's name
DB_OPTION = "--stepflow-db"  # what the plugin's messages tell a user to pass (StorageError)


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  # without the --stepflow- prefix
    help: str
    ini_type: str | None = "string"
    metavar: str | None = None
    flag: bool = False
    repeatable: bool = False


OPTIONS = (
    Option("", "record this run into a SQLite database (off by default)", "bool", flag=True),
    Option(
        "db",
        f"the database: {ACCEPTED} (env {DB_ENV}; default <rootdir>/{DEFAULT_DB})",
        metavar="PATH",
    ),
    Option("name", "a name for this execution", metavar="NAME"),
    Option(
        "run-group",
        f"the run group (CI pipeline) this session is one job of; the commands treat a "
        f"group's executions as one run (env {RUN_GROUP_ENV}; default: the CI pipeline's id "
        "and attempt, else the execution's own id)",
        metavar="ID",
    ),
    Option(
        "shard",
        f"which job of the run group this is, e.g. 2/4 (env {SHARD_ENV}; default: the CI "
        "job's index and total, or its name)",
        metavar="NAME",
    ),
    Option(
        "splits",
        "run one of N shards of the suite, balanced by the recorded durations in the "
        f"database (needs --stepflow-group; env {SPLITS_ENV}; works without --stepflow)",
        metavar="N",
    ),
    Option(
        "group",
        f"which shard of --stepflow-splits to run, 1 to N (env {GROUP_ENV})",
        metavar="K",
    ),
    Option(
        "order",
        "run the tests in this order, from their recorded history: failed-first (failed "
        "in their last runs), new-first (never recorded), slowest-first, risk (failure "
        "rate, then recency, then duration); files and classes stay together; works "
        "without --stepflow",
        metavar="ORDER",
    ),
    Option(
        "quarantine",
        "quarantined tests (`stepflow quarantine`, read from the database) still run and "
        "are recorded, but their failures do not fail the session; works without --stepflow",
        "bool",
        flag=True,
    ),
    Option(
        "quarantine-file",
        "with --stepflow-quarantine: the tests a quarantine file (stepflow quarantine "
        "export) lists are quarantined too, imported or not",
        metavar="PATH",
    ),
    Option("tag", "tag the execution, repeatable", "linelist", "KEY=VALUE", repeatable=True),
    Option(
        "batch-size",
        "records handed to the writer process at once, at most; they are "
        "handed over every flush interval or as soon as this many wait (default 1000)",
        metavar="N",
    ),
    Option("flush-interval", "seconds between writes (default 1.0)", metavar="SECONDS"),
    Option(
        "capture",
        "whose output and log records to keep: all tests, failed tests only, or none "
        "(default all); tracebacks are always kept",
        metavar="all|failed|none",
    ),
    Option("max-output", "bytes per stream per step, e.g. 1MiB (default 1MiB)", metavar="SIZE"),
    Option(
        "retry-budget",
        "seconds a batch may wait for a locked database before it goes to the spill journal "
        "(default 30)",
        metavar="SECONDS",
    ),
    Option(
        "max-artifact-size",
        f"largest artifact stored, e.g. 10MiB (default {DEFAULT_MAX_ARTIFACT_SIZE // MIB}MiB)",
        metavar="SIZE",
    ),
    Option(
        "max-artifact-total",
        "total size of the artifacts one run stores, e.g. 2GiB (default "
        f"{DEFAULT_MAX_ARTIFACT_TOTAL // GIB}GiB; split evenly between xdist workers)",
        metavar="SIZE",
    ),
    Option(
        "html",
        "write the HTML report of this run to PATH when the session ends (on the "
        "controller under xdist), as `stepflow report` does",
        metavar="PATH",
    ),
    Option(
        "attach-on-failure",
        "attach the files of a failed test's tmp_path that match GLOB (e.g. '*.png', "
        "'**/*.log'), repeatable",
        "linelist",
        "GLOB",
        repeatable=True,
    ),
)


def dest(option: Option) -> str:
    return "stepflow" + ("_" + option.name.replace("-", "_") if option.name else "")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("stepflow", "record runs into SQLite (pytest-stepflow)")
    for option in OPTIONS:
        flag = "--stepflow" + (f"-{option.name}" if option.name else "")
        if option.flag:
            group.addoption(
                flag, action="store_true", default=None, dest=dest(option), help=option.help
            )
        else:
            group.addoption(
                flag,
                action="append" if option.repeatable else "store",
                default=None,
                dest=dest(option),
                metavar=option.metavar,
                help=option.help,
            )
        parser.addini(dest(option), option.help, type=option.ini_type)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Settings:
    location: Location  # where the backend finds the database (storage/backend.py)
    name: str | None
    tags: Mapping[str, str]
    batch_size: int
    flush_interval: float
    capture: str
    max_output: int
    retry_budget: float
    max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE
    max_artifact_total: int = DEFAULT_MAX_ARTIFACT_TOTAL
    attach_on_failure: tuple[str, ...] = ()
    html_path: Path | None = None
    run_group: str | None = None  # None: the execution is a group of its own
    shard: str | None = None
    split: tuple[int, int] | None = None  # (K, N): shard K of N balanced shards

    def describe_db(self) -> str:
        """The database in messages: a path (relative to the current folder where that is
        shorter), or a server URL with its password masked."""
        if isinstance(self.location, SqliteLocation):
            return display_path(self.location.path)
        return self.location.describe()


def enabled(config: pytest.Config) -> bool:
    cli = config.getoption("stepflow")
    return bool(cli) if cli is not None else bool(config.getini("stepflow"))


def _raw(config: pytest.Config, name: str) -> Any:
    key = "stepflow_" + name.replace("-", "_")
    cli = config.getoption(key)
    if cli is not None:
        return cli
    env = _ENVIRONMENT.get(name)
    if env and os.environ.get(env):
        return os.environ[env]
    ini = config.getini(key)
    return ini if ini not in ("", [], None) else None


def _fail(name: str, value: object, accepted: str) -> pytest.UsageError:
    return pytest.UsageError(
        f"--stepflow-{name} (ini stepflow_{name.replace('-', '_')}): {value!r} is not valid; "
        f"expected {accepted}"
    )


def _number(name: str, value: Any, kind: Callable[[str], float], low: float, accepted: str) -> Any:
    try:
        number = kind(str(value).strip())
    except ValueError:
        raise _fail(name, value, accepted) from None
    if not number >= low or number == float("inf"):
        raise _fail(name, value, accepted)
    return number


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 10**9,
    "gib": 1 << 30,
}


def parse_size(value: str) -> int | None:
    match = _SIZE.match(value)
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def _size(config: pytest.Config, name: str, default: int) -> int:
    text = str(_raw(config, name) or default)
    size = parse_size(text)
    if size is None:
        raise _fail(name, text, "a size in bytes, e.g. 0, 65536, 512KiB, 10MiB, 2GiB")
    return size


def parse_globs(values: list[str]) -> tuple[str, ...]:
    """Patterns relative to a test's tmp_path: nothing absolute, nothing that climbs out."""
    globs: list[str] = []
    for value in values:
        pattern = str(value).strip()
        parts = pattern.replace("\\", "/").split("/")
        if not pattern or pattern.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise _fail(
                "attach-on-failure",
                value,
                "a glob relative to the test's tmp_path, e.g. '*.png' or '**/*.log'",
            )
        if pattern not in globs:
            globs.append(pattern)
    return tuple(globs)


def group_text(name: str, value: object) -> str | None:
    """A run group's or shard's name: one line of printable text, or None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_GROUP_TEXT or not text.isprintable():
        raise _fail(name, value, f"one line of printable text, at most {MAX_GROUP_TEXT} characters")
    return text


def _from_ci(value: str | None) -> str | None:
    """A CI variable's group or shard as the options accept one: a job name may be
    anything, and it must never fail the session, so it is trimmed rather than refused."""
    if value is None:
        return None
    text = "".join(c if c.isprintable() else " " for c in value).strip()
    return text[:MAX_GROUP_TEXT] or None


def split_choice(config: pytest.Config) -> tuple[int, int] | None:
    """(K, N) of --stepflow-group K --stepflow-splits N, or None when not splitting;
    UsageError for a bad value or a group without splits."""
    raw_splits, raw_group = _raw(config, "splits"), _raw(config, "group")
    if raw_splits is None:
        if raw_group is not None:
            raise _fail("group", raw_group, "to be given with --stepflow-splits N")
        return None
    splits = _number("splits", raw_splits, int, 1, "a whole number of shards, at least 1")
    if raw_group is None:
        raise pytest.UsageError(
            f"--stepflow-splits={splits} needs --stepflow-group K (1 to {splits}): the shard "
            "this session runs"
        )
    group = _number("group", raw_group, int, 1, f"a shard number from 1 to {splits}")
    if group > splits:
        raise _fail("group", raw_group, f"a shard number from 1 to {splits}")
    return group, splits


def order_choice(config: pytest.Config) -> str | None:
    """--stepflow-order's value, or None; UsageError for an unknown one."""
    raw = _raw(config, "order")
    if raw is None or raw == "":
        return None
    from pytest_stepflow.query.order import ORDERS

    if raw not in ORDERS:
        raise _fail("order", raw, "one of " + ", ".join(ORDERS))
    return str(raw)


def quarantine_choice(config: pytest.Config) -> tuple[bool, Path | None]:
    """(--stepflow-quarantine, the --stepflow-quarantine-file path); UsageError for a file
    option without the quarantine, or a folder for a file."""
    cli = config.getoption("stepflow_quarantine")
    on = bool(cli) if cli is not None else bool(config.getini("stepflow_quarantine"))
    raw = _raw(config, "quarantine-file")
    if raw is None:
        return on, None
    if not on:
        raise _fail("quarantine-file", raw, "to be given with --stepflow-quarantine")
    path = _path(config, "quarantine-file", raw)
    if path.is_dir():
        raise _fail("quarantine-file", raw, "a quarantine file, e.g. stepflow-quarantine.toml")
    return on, path


def history_location(config: pytest.Config) -> Location:
    """The database the run records into (and the balanced shards read): --stepflow-db,
    else $STEPFLOW_DB or the ini's, else <rootdir>/.stepflow/stepflow.db."""
    raw_db = _raw(config, "db")
    if raw_db:
        return _location(config, raw_db)
    return SqliteLocation(Path(os.path.abspath(config.rootpath / DEFAULT_DB)))


def run_group_and_shard(config: pytest.Config) -> tuple[str | None, str | None]:
    """The options' group and shard, else (the shard) K/N of the balanced shards, else the
    CI pipeline's and job's (environment.py)."""
    group = group_text("run-group", _raw(config, "run-group"))
    shard = group_text("shard", _raw(config, "shard"))
    choice = split_choice(config)
    if shard is None and choice is not None:
        shard = f"{choice[0]}/{choice[1]}"
    if group is None or shard is None:
        ci_group, ci_shard = ci_run_group(os.environ)
        group = group or _from_ci(ci_group)
        shard = shard or _from_ci(ci_shard)
    return group, shard


def parse_tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise _fail("tag", value, "KEY=VALUE, e.g. --stepflow-tag suite=smoke")
        tags[key.strip()] = text.strip()
    return tags


def _path(config: pytest.Config, name: str, raw: object) -> Path:
    path = Path(os.path.expanduser(str(raw)))
    if not path.is_absolute():  # tests may chdir later, so resolve now
        env = _ENVIRONMENT.get(name)
        from_ini = config.getoption("stepflow_" + name.replace("-", "_")) is None and not (
            env and os.environ.get(env)
        )
        # A path in an ini file is relative to that file, as pytest's own path options are.
        base = config.inipath.parent if from_ini and config.inipath else None
        path = (base or Path(config.invocation_params.dir)) / path
    return Path(os.path.abspath(path))


def _location(config: pytest.Config, raw: object) -> Location:
    """The database a location names, a relative file path resolved; a server's local
    folder (spills, artifact staging) is the rootdir's `.stepflow`. The message of a
    location that names none never shows the value itself (a server URL may hold a
    password: LocationError redacts it)."""
    try:
        location = parse_location(str(raw))
    except LocationError as exc:
        raise pytest.UsageError(f"--stepflow-db (ini stepflow_db, env {DB_ENV}): {exc}") from exc
    if isinstance(location, PostgresqlLocation):
        return dataclasses.replace(location, local_dir=config.rootpath / DEFAULT_DB.parent)
    return SqliteLocation(_path(config, "db", location.path))


def resolve(config: pytest.Config) -> Settings:
    """Read and validate every option once; raises pytest.UsageError saying what is accepted."""
    location = history_location(config)
    run_group, shard = run_group_and_shard(config)
    raw_html = _raw(config, "html")
    html = _path(config, "html", raw_html) if raw_html else None
    if html is not None and html.is_dir():
        raise _fail("html", raw_html, "a file path for the report, e.g. report.html")
    capture = str(_raw(config, "capture") or "all").strip().lower()
    if capture not in CAPTURE_CHOICES:
        raise _fail("capture", capture, "one of " + ", ".join(CAPTURE_CHOICES))
    size_text = str(_raw(config, "max-output") or "1MiB")
    max_output = parse_size(size_text)
    if max_output is None or max_output < 1024:
        raise _fail("max-output", size_text, "a size of at least 1024 bytes, e.g. 65536, 512KiB")
    ini_tags = config.getini("stepflow_tag") or []
    cli_tags = config.getoption("stepflow_tag") or []
    # Repeatable and additive like tags: the ini's patterns and the command line's.
    globs = [
        *(config.getini("stepflow_attach_on_failure") or []),
        *(config.getoption("stepflow_attach_on_failure") or []),
    ]
    return Settings(
        location=location,
        name=_raw(config, "name"),
        tags=parse_tags([*ini_tags, *cli_tags]),  # CLI tags override ini tags of the same key
        batch_size=_number(
            "batch-size", _raw(config, "batch-size") or 1000, int, 1, "a whole number of at least 1"
        ),
        flush_interval=_number(
            "flush-interval",
            _raw(config, "flush-interval") or 1.0,
            float,
            0.01,
            "seconds, at least 0.01",
        ),
        capture=capture,
        max_output=max_output,
        retry_budget=_number(
            "retry-budget", _raw(config, "retry-budget") or 30, float, 0, "seconds, 0 or more"
        ),
        max_artifact_size=_size(config, "max-artifact-size", DEFAULT_MAX_ARTIFACT_SIZE),
        max_artifact_total=_size(config, "max-artifact-total", DEFAULT_MAX_ARTIFACT_TOTAL),
        attach_on_failure=parse_globs(globs),
        html_path=html,
        run_group=run_group,
        shard=shard,
        split=split_choice(config),
    )
