"""Where an execution ran: allow-listed environment, CI provider, git state, platform.

Everything here is best effort and must never fail a test session: unknown or missing
data is simply omitted.
"""

from __future__ import annotations

import os
import platform
import re
import string
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias
from urllib.parse import quote

MAX_VALUE_LENGTH = 4096

# A field is a variable name, a "{VAR}" template, or alternatives tried in order.
_Field: TypeAlias = str | tuple[str, ...]

# (provider, variable whose truthiness detects it, output key -> field).
_PROVIDERS: tuple[tuple[str, str, dict[str, _Field]], ...] = (
    (
        "github-actions",
        "GITHUB_ACTIONS",
        {
            "run_id": "GITHUB_RUN_ID",
            "run_number": "GITHUB_RUN_NUMBER",
            "run_attempt": "GITHUB_RUN_ATTEMPT",
            "job": "GITHUB_JOB",
            "workflow": "GITHUB_WORKFLOW",
            "url": "{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}",
            # GITHUB_HEAD_REF is the source branch on pull requests and empty otherwise.
            "branch": ("GITHUB_HEAD_REF", "GITHUB_REF_NAME"),
            "commit": "GITHUB_SHA",
            "pull_request": "GITHUB_REF",
        },
    ),
    (
        "gitlab-ci",
        "GITLAB_CI",
        {
            "run_id": "CI_PIPELINE_ID",
            "job_id": "CI_JOB_ID",
            "job": "CI_JOB_NAME",
            "url": "CI_PIPELINE_URL",
            "job_url": "CI_JOB_URL",
            "commit": "CI_COMMIT_SHA",
            "branch": "CI_COMMIT_REF_NAME",
            "pull_request": "CI_MERGE_REQUEST_IID",
        },
    ),
    (
        "jenkins",
        "JENKINS_URL",
        {
            "run_id": "BUILD_ID",
            "run_number": "BUILD_NUMBER",
            "job": "JOB_NAME",
            "url": "BUILD_URL",
            "commit": "GIT_COMMIT",
            "branch": ("BRANCH_NAME", "GIT_BRANCH"),
            "pull_request": "CHANGE_ID",
        },
    ),
    (
        "circleci",
        "CIRCLECI",
        {
            "run_id": "CIRCLE_WORKFLOW_ID",
            "run_number": "CIRCLE_BUILD_NUM",
            "job": "CIRCLE_JOB",
            "url": "CIRCLE_BUILD_URL",
            "commit": "CIRCLE_SHA1",
            "branch": "CIRCLE_BRANCH",
            "pull_request": "CIRCLE_PULL_REQUEST",
        },
    ),
    (
        "buildkite",
        "BUILDKITE",
        {
            "run_id": "BUILDKITE_BUILD_ID",
            "run_number": "BUILDKITE_BUILD_NUMBER",
            "job_id": "BUILDKITE_JOB_ID",
            "job": "BUILDKITE_LABEL",
            "url": "BUILDKITE_BUILD_URL",
            "commit": "BUILDKITE_COMMIT",
            "branch": "BUILDKITE_BRANCH",
            "pull_request": "BUILDKITE_PULL_REQUEST",
        },
    ),
    (
        "azure-pipelines",
        "TF_BUILD",
        {
            "run_id": "BUILD_BUILDID",
            "run_number": "BUILD_BUILDNUMBER",
            "job_id": "SYSTEM_JOBID",
            "job": "SYSTEM_JOBDISPLAYNAME",
            "url": (
                "{SYSTEM_COLLECTIONURI}{SYSTEM_TEAMPROJECT}/_build/results?buildId={BUILD_BUILDID}"
            ),
            "commit": "BUILD_SOURCEVERSION",
            "branch": "BUILD_SOURCEBRANCHNAME",
            "pull_request": (
                "SYSTEM_PULLREQUEST_PULLREQUESTNUMBER",
                "SYSTEM_PULLREQUEST_PULLREQUESTID",
            ),
        },
    ),
)


def _templates(field: _Field) -> tuple[str, ...]:
    alternatives = (field,) if isinstance(field, str) else field
    return tuple(t if "{" in t else "{" + t + "}" for t in alternatives)


def _variables(field: _Field) -> set[str]:
    return {f for t in _templates(field) for _, f, _, _ in string.Formatter().parse(t) if f}


_CI_VARIABLES = frozenset(
    {"CI"}
    | {flag for _, flag, _ in _PROVIDERS}
    | {v for _, _, fields in _PROVIDERS for field in fields.values() for v in _variables(field)}
)

ENVIRONMENT_ALLOW_LIST: frozenset[str] = (
    frozenset(
        {
            "TZ",
            "LANG",
            "LANGUAGE",
            "LC_ALL",
            "LC_CTYPE",
            "LC_COLLATE",
            "LC_NUMERIC",
            "LC_TIME",
            "PYTHONHASHSEED",
            "PYTHONPATH",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONWARNINGS",
            "PYTHONOPTIMIZE",
            "PYTHONDEVMODE",
            "PYTHONUTF8",
            "PYTHONIOENCODING",
            "PYTHONFAULTHANDLER",
            "PYTHONASYNCIODEBUG",
            "PYTEST_ADDOPTS",
            "PYTEST_PLUGINS",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
            "PYTEST_XDIST_AUTO_NUM_WORKERS",
            "VIRTUAL_ENV",
            "CONDA_DEFAULT_ENV",
            "CONDA_PREFIX",
            "TOX_ENV_NAME",
            "SOURCE_DATE_EPOCH",
            "TERM",
            "COLUMNS",
            "NO_COLOR",
            "FORCE_COLOR",
            "PY_COLORS",
        }
    )
    | _CI_VARIABLES
)

_SECRET_SUBSTRINGS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "COOKIE",
    "SESSION",
    "SIGNATURE",
    "CERT",
    "SALT",
)
# Matched as whole words only, so KEYBOARD_LAYOUT or BYPASS_CACHE stay readable.
_SECRET_WORDS = frozenset({"KEY", "PASS"})
# A user part: a name (a token, perhaps), or a name, `:` and a password that runs to the
# last `@` of the word, since a password may hold `/`, `?`, `#` or `@` unencoded (a
# `host:port/path@x` is masked too: the safe side).
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?:[^\s/?#@:]*:\S*@|[^\s/?#@]*@)"
)
_PR_NUMBER = re.compile(r"(?:refs/pull/|https?://\S+/pull/)?(\d+)(?:/merge|/head)?")
_FALSY = frozenset({"", "0", "false", "no", "off"})


def looks_secret(name: str) -> bool:
    """True when an environment variable's name suggests it holds a secret."""
    upper = name.upper()
    if any(s in upper for s in _SECRET_SUBSTRINGS):
        return True
    return not _SECRET_WORDS.isdisjoint(re.split(r"[^A-Z0-9]+", upper))


def redact_credentials(value: str) -> str:
    """`value` with the user part of every URL in it masked (`postgresql://***@host/db`):
    a password, or a token used as a user name."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", value)


def _clean(value: str) -> str:
    # Redact before truncating so a cut can never expose half of a password.
    return redact_credentials(value)[:MAX_VALUE_LENGTH]


def collect_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed, non-secret variables of *environ*, with URL credentials redacted."""
    return {
        name: _clean(environ[name])
        for name in sorted(ENVIRONMENT_ALLOW_LIST.intersection(environ))
        if not looks_secret(name)
    }


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _FALSY


def _render(field: _Field, environ: Mapping[str, str]) -> str | None:
    for template in _templates(field):
        parts = list(string.Formatter().parse(template))
        names = [name for _, name, _, _ in parts if name]
        if all(environ.get(name) for name in names):
            # Pieces of a composed URL are escaped (Azure project names may contain spaces).
            values = {
                n: quote(environ[n], safe=":/%") if len(names) > 1 else environ[n] for n in names
            }
            return "".join(lit + (values[n] if n else "") for lit, n, _, _ in parts)
    return None


def ci_info(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Identify the CI provider and run, or None when not running on CI."""
    for provider, flag, fields in _PROVIDERS:
        if not _truthy(environ.get(flag)):
            continue
        info = {"provider": provider}
        for key, field in fields.items():
            value = _render(field, environ)
            if value is not None and key == "pull_request":
                # Keep the number only; drops Buildkite's "false" and GitHub branch refs.
                match = _PR_NUMBER.fullmatch(value)
                value = match.group(1) if match else None
            if value is not None:
                info[key] = _clean(value)
        return info
    return {"provider": "unknown"} if _truthy(environ.get("CI")) else None


def git_info(path: Path, timeout: float = 2.0) -> dict[str, object] | None:
    """Commit, branch (None when detached) and tracked-changes flag of the work tree at *path*.

    None when *path* is not in a work tree with a commit, git is missing, or git fails.
    """
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # never take index.lock under a live run
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)  # let `-C path` alone decide which repository is inspected
    # One process: porcelain v2 headers carry the commit and branch, entries mean dirty.
    command = [
        "git",
        "-C",
        str(path),
        "status",
        "--porcelain=v2",
        "--branch",
        "--untracked-files=no",
        "--no-renames",
    ]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=timeout,
            encoding="utf-8",
            errors="replace",
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    headers: dict[str, str] = {}
    dirty = False
    for line in result.stdout.splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].partition(" ")
            headers[key] = value
        elif line:
            dirty = True
    commit = headers.get("branch.oid", "(initial)")
    if commit == "(initial)":
        return None
    branch = headers.get("branch.head")
    return {"commit": commit, "branch": None if branch == "(detached)" else branch, "dirty": dirty}


def os_metadata() -> dict[str, object]:
    """The OS: `platform.platform()` runs `uname -p` (a subprocess, milliseconds), so the
    writer process asks, with git, off the test process's way."""
    return {"platform": platform.platform()}
