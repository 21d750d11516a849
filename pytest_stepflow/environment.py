"""Where an execution ran: allow-listed environment, CI provider, git state, platform.

Everything here is best effort and must never fail a test session: unknown or missing
data is simply omitted.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import string
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias
from urllib.parse import quote

MAX_VALUE_LENGTH = 4096

# A field is a variable name, a "{VAR}" template, or alternatives tried in order; a template
# is used only when every variable in it is set and non-empty. A "{VAR:.0}" piece prints
# nothing: it only makes the template require VAR.
_Field: TypeAlias = str | tuple[str, ...]

# Keys whose composed templates are URLs: their pieces are percent-escaped.
_URL_KEYS = frozenset({"url", "job_url"})


@dataclass(frozen=True)
class _Shard:
    """Which job of the pipeline this is: "K/N" from a position (K 1-based) and a total,
    "K" from a position alone, else the job's name."""

    index: str | None = None  # the variable holding the job's position
    base: int = 1  # 0 when that position counts from zero
    total: str | None = None  # the variable holding the number of jobs
    name: _Field | None = None  # the job's name, used when there is no position


@dataclass(frozen=True)
class _Provider:
    name: str
    # Every variable must be set: to a truthy value (None), or to text the pattern matches.
    detect: tuple[tuple[str, re.Pattern[str] | None], ...]
    fields: dict[str, _Field]
    # The id every job of one pipeline run (or attempt) shares: where an execution's shards
    # are gathered. Never a per-job id.
    group: _Field | None = None
    shard: _Shard = _Shard()


def _flag(name: str) -> tuple[tuple[str, re.Pattern[str] | None], ...]:
    return ((name, None),)


_UUID = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", re.IGNORECASE)

# Tried in this order, the first match wins: a provider whose detection is weaker or whose
# variables another provider also sets comes after it (Woodpecker, which exports Drone's
# names for Drone plugins, before Drone; Google Cloud Build, detected from generic names,
# last). Only a bare truthy CI falls through to "unknown".
_PROVIDERS: tuple[_Provider, ...] = (
    _Provider(
        "github-actions",
        _flag("GITHUB_ACTIONS"),
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
        # A re-run is a new attempt of the same run id: each attempt is its own group.
        group=("{GITHUB_RUN_ID}-{GITHUB_RUN_ATTEMPT}", "GITHUB_RUN_ID"),
        # GitHub exports nothing about a matrix: the job id names the job, not the leg.
        shard=_Shard(name="GITHUB_JOB"),
    ),
    _Provider(
        "gitlab-ci",
        _flag("GITLAB_CI"),
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
        group="CI_PIPELINE_ID",
        # CI_NODE_INDEX (1-based) is set for `parallel:` jobs only, whose CI_JOB_NAME
        # already ends in "1/4"; CI_NODE_TOTAL is 1 for the others.
        shard=_Shard(index="CI_NODE_INDEX", total="CI_NODE_TOTAL", name="CI_JOB_NAME"),
    ),
    _Provider(
        "jenkins",
        _flag("JENKINS_URL"),
        {
            "run_id": "BUILD_ID",
            "run_number": "BUILD_NUMBER",
            "job": "JOB_NAME",
            "url": "BUILD_URL",
            "commit": "GIT_COMMIT",
            "branch": ("BRANCH_NAME", "GIT_BRANCH"),
            "pull_request": "CHANGE_ID",
        },
        # "jenkins-${JOB_NAME}-${BUILD_NUMBER}": the build, whose parallel stages share it.
        group="BUILD_TAG",
        # A declarative pipeline's current stage.
        shard=_Shard(name="STAGE_NAME"),
    ),
    _Provider(
        "circleci",
        _flag("CIRCLECI"),
        {
            "run_id": "CIRCLE_WORKFLOW_ID",
            "run_number": "CIRCLE_BUILD_NUM",
            "job": "CIRCLE_JOB",
            "url": "CIRCLE_BUILD_URL",
            "commit": "CIRCLE_SHA1",
            "branch": "CIRCLE_BRANCH",
            "pull_request": "CIRCLE_PULL_REQUEST",
        },
        group="CIRCLE_WORKFLOW_ID",
        shard=_Shard(
            index="CIRCLE_NODE_INDEX", base=0, total="CIRCLE_NODE_TOTAL", name="CIRCLE_JOB"
        ),
    ),
    _Provider(
        "buildkite",
        _flag("BUILDKITE"),
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
        group="BUILDKITE_BUILD_ID",
        shard=_Shard(
            index="BUILDKITE_PARALLEL_JOB",
            base=0,
            total="BUILDKITE_PARALLEL_JOB_COUNT",
            name="BUILDKITE_LABEL",
        ),
    ),
    _Provider(
        "azure-pipelines",
        _flag("TF_BUILD"),
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
        group="BUILD_BUILDID",
        shard=_Shard(
            index="SYSTEM_JOBPOSITIONINPHASE",
            total="SYSTEM_TOTALJOBSINPHASE",
            name="SYSTEM_JOBDISPLAYNAME",
        ),
    ),
    _Provider(
        "travis-ci",
        _flag("TRAVIS"),
        {
            "run_id": "TRAVIS_BUILD_ID",
            "run_number": "TRAVIS_BUILD_NUMBER",
            "job_id": "TRAVIS_JOB_ID",
            "job": ("TRAVIS_JOB_NAME", "TRAVIS_JOB_NUMBER"),
            "url": "TRAVIS_BUILD_WEB_URL",
            "job_url": "TRAVIS_JOB_WEB_URL",
            "commit": "TRAVIS_COMMIT",
            # The source branch of a pull request, else the branch built.
            "branch": ("TRAVIS_PULL_REQUEST_BRANCH", "TRAVIS_BRANCH"),
            "pull_request": "TRAVIS_PULL_REQUEST",  # "false" outside pull requests
        },
        # The build (TRAVIS_BUILD_ID, internal and unique) holds the matrix's jobs.
        group="TRAVIS_BUILD_ID",
        # No index and no total: the optional job name, else "4.1" (build 4, job 1).
        shard=_Shard(name=("TRAVIS_JOB_NAME", "TRAVIS_JOB_NUMBER")),
    ),
    _Provider(
        "bitbucket-pipelines",
        # Bitbucket has no flag of its own (CI=true only): its build number is always set.
        _flag("BITBUCKET_BUILD_NUMBER"),
        {
            "run_id": "BITBUCKET_PIPELINE_UUID",
            "run_number": "BITBUCKET_BUILD_NUMBER",
            "job_id": "BITBUCKET_STEP_UUID",
            "url": "{BITBUCKET_GIT_HTTP_ORIGIN}/pipelines/results/{BITBUCKET_BUILD_NUMBER}",
            "commit": "BITBUCKET_COMMIT",
            "branch": "BITBUCKET_BRANCH",
            "pull_request": "BITBUCKET_PR_ID",
        },
        # The pipeline, shared by its steps (and kept when a failed step is re-run); the
        # build number is only unique within a repository.
        group=(
            "BITBUCKET_PIPELINE_UUID",
            "{BITBUCKET_REPO_FULL_NAME}#{BITBUCKET_BUILD_NUMBER}",
        ),
        shard=_Shard(
            index="BITBUCKET_PARALLEL_STEP", base=0, total="BITBUCKET_PARALLEL_STEP_COUNT"
        ),
    ),
    _Provider(
        "teamcity",
        _flag("TEAMCITY_VERSION"),
        {
            # TeamCity exports no build id (teamcity.build.id is a system property only):
            # BUILD_NUMBER, as formatted by the build configuration, is the build's name.
            "run_id": "BUILD_NUMBER",
            "run_number": "BUILD_NUMBER",
            "job": "TEAMCITY_BUILDCONF_NAME",
            "url": "BUILD_URL",
            # Only with a single VCS root (else BUILD_VCS_NUMBER_<root id>).
            "commit": "BUILD_VCS_NUMBER",
        },
        # Builds of a chain share nothing in the environment: each build is its own group,
        # named by its link (newer servers) or by configuration and number.
        group=("BUILD_URL", "{TEAMCITY_PROJECT_NAME}/{TEAMCITY_BUILDCONF_NAME}#{BUILD_NUMBER}"),
        shard=_Shard(name="TEAMCITY_BUILDCONF_NAME"),
    ),
    _Provider(
        "appveyor",
        _flag("APPVEYOR"),
        {
            "run_id": "APPVEYOR_BUILD_ID",
            "run_number": "APPVEYOR_BUILD_NUMBER",
            "job_id": "APPVEYOR_JOB_ID",
            "job": "APPVEYOR_JOB_NAME",
            "url": (
                "{APPVEYOR_URL}/project/{APPVEYOR_ACCOUNT_NAME}/{APPVEYOR_PROJECT_SLUG}"
                "/builds/{APPVEYOR_BUILD_ID}"
            ),
            "job_url": (
                "{APPVEYOR_URL}/project/{APPVEYOR_ACCOUNT_NAME}/{APPVEYOR_PROJECT_SLUG}"
                "/build/job/{APPVEYOR_JOB_ID}"
            ),
            "commit": "APPVEYOR_REPO_COMMIT",
            "branch": ("APPVEYOR_PULL_REQUEST_HEAD_REPO_BRANCH", "APPVEYOR_REPO_BRANCH"),
            "pull_request": "APPVEYOR_PULL_REQUEST_NUMBER",
        },
        # The build holds the matrix's jobs; APPVEYOR_JOB_NUMBER is the job's 1-based
        # position in it, with no total exported.
        group="APPVEYOR_BUILD_ID",
        shard=_Shard(index="APPVEYOR_JOB_NUMBER", name="APPVEYOR_JOB_NAME"),
    ),
    _Provider(
        "woodpecker",
        # Woodpecker sets CI=woodpecker and CI_* names that partly overlap GitLab's
        # (CI_COMMIT_SHA, CI_PIPELINE_URL...) but never GITLAB_CI, which GitLab always sets;
        # it also copies its values to Drone's names for Drone plugins, never DRONE=true.
        (("CI", re.compile("woodpecker", re.IGNORECASE)),),
        {
            "run_id": "CI_PIPELINE_NUMBER",
            "run_number": "CI_PIPELINE_NUMBER",
            "job": "CI_WORKFLOW_NAME",
            "url": "CI_PIPELINE_URL",
            "job_url": "CI_STEP_URL",
            "commit": "CI_COMMIT_SHA",
            # The source branch of a pull request, else the branch built.
            "branch": ("CI_COMMIT_SOURCE_BRANCH", "CI_COMMIT_BRANCH"),
            "pull_request": "CI_COMMIT_PULL_REQUEST",
        },
        # The pipeline, whose workflows are the jobs; its number is per repository.
        group="{CI_REPO}#{CI_PIPELINE_NUMBER}",
        shard=_Shard(name="CI_WORKFLOW_NAME"),
    ),
    _Provider(
        "drone",
        _flag("DRONE"),
        {
            "run_id": "DRONE_BUILD_NUMBER",
            "run_number": "DRONE_BUILD_NUMBER",
            "job": "DRONE_STAGE_NAME",
            "url": "DRONE_BUILD_LINK",
            "commit": "DRONE_COMMIT_SHA",
            "branch": ("DRONE_SOURCE_BRANCH", "DRONE_BRANCH"),
            "pull_request": "DRONE_PULL_REQUEST",
        },
        # The build, whose stages (pipelines) are the jobs; its number is per repository.
        group="{DRONE_REPO}#{DRONE_BUILD_NUMBER}",
        # DRONE_STAGE_NUMBER orders the stages but is no shard position: the name is kept.
        shard=_Shard(name="DRONE_STAGE_NAME"),
    ),
    _Provider(
        "aws-codebuild",
        _flag("CODEBUILD_BUILD_ID"),
        {
            "run_id": "CODEBUILD_BUILD_ID",
            "run_number": "CODEBUILD_BUILD_NUMBER",
            "job": "CODEBUILD_BATCH_BUILD_IDENTIFIER",
            "url": "CODEBUILD_PUBLIC_BUILD_URL",  # set only for public builds
            "commit": "CODEBUILD_RESOLVED_SOURCE_VERSION",
            "branch": "CODEBUILD_WEBHOOK_HEAD_REF",  # refs/heads/<branch>
            "pull_request": "CODEBUILD_WEBHOOK_TRIGGER",  # pr/<number>, branch/<name>...
        },
        # Each build of a batch has its own CODEBUILD_BUILD_ID and no variable names the
        # batch; in a batch's builds CODEBUILD_INITIATOR is the batch that started them (not
        # in AWS's table, relied on by Cypress's CodeBuild guide), elsewhere it is a user or a
        # pipeline name, shared by unrelated builds: used only inside a batch.
        group=(
            "{CODEBUILD_BATCH_BUILD_IDENTIFIER:.0}{CODEBUILD_INITIATOR}",
            "CODEBUILD_BUILD_ID",
        ),
        shard=_Shard(name="CODEBUILD_BATCH_BUILD_IDENTIFIER"),
    ),
    _Provider(
        "bitrise",
        _flag("BITRISE_IO"),
        {
            "run_id": "BITRISE_BUILD_SLUG",
            "run_number": "BITRISE_BUILD_NUMBER",
            "job": "BITRISE_TRIGGERED_WORKFLOW_ID",
            "url": "BITRISE_BUILD_URL",
            # GIT_CLONE_COMMIT_HASH: exported by the Git Clone step when no commit was given.
            "commit": ("BITRISE_GIT_COMMIT", "GIT_CLONE_COMMIT_HASH"),
            "branch": "BITRISE_GIT_BRANCH",
            "pull_request": "BITRISE_PULL_REQUEST",
        },
        # In a pipeline every workflow is a build of its own: the pipeline id gathers them.
        group=("BITRISEIO_PIPELINE_ID", "BITRISE_BUILD_SLUG"),
        shard=_Shard(
            index="BITRISE_IO_PARALLEL_INDEX",
            base=0,
            total="BITRISE_IO_PARALLEL_TOTAL",
            name="BITRISE_TRIGGERED_WORKFLOW_ID",
        ),
    ),
    _Provider(
        "semaphore",
        _flag("SEMAPHORE"),
        {
            "run_id": "SEMAPHORE_WORKFLOW_ID",
            "run_number": "SEMAPHORE_WORKFLOW_NUMBER",
            "job_id": "SEMAPHORE_JOB_ID",
            "job": "SEMAPHORE_JOB_NAME",
            "url": "{SEMAPHORE_ORGANIZATION_URL}/workflows/{SEMAPHORE_WORKFLOW_ID}",
            "job_url": "{SEMAPHORE_ORGANIZATION_URL}/jobs/{SEMAPHORE_JOB_ID}",
            "commit": "SEMAPHORE_GIT_SHA",
            # On pull requests SEMAPHORE_GIT_BRANCH is the target, the working branch the source.
            "branch": ("SEMAPHORE_GIT_WORKING_BRANCH", "SEMAPHORE_GIT_BRANCH"),
            "pull_request": "SEMAPHORE_GIT_PR_NUMBER",
        },
        # The pipeline: the workflow also holds the later, promoted pipelines (deploys).
        group="SEMAPHORE_PIPELINE_ID",
        shard=_Shard(
            index="SEMAPHORE_JOB_INDEX", total="SEMAPHORE_JOB_COUNT", name="SEMAPHORE_JOB_NAME"
        ),
    ),
    _Provider(
        "codefresh",
        _flag("CF_BUILD_ID"),
        {
            "run_id": "CF_BUILD_ID",
            "job": "CF_STEP_NAME",
            "workflow": "CF_PIPELINE_NAME",
            "url": "CF_BUILD_URL",
            "commit": "CF_REVISION",
            "branch": "CF_BRANCH",
            "pull_request": "CF_PULL_REQUEST_NUMBER",
        },
        # The build, whose (possibly parallel) steps are the jobs.
        group="CF_BUILD_ID",
        shard=_Shard(name="CF_STEP_NAME"),
    ),
    _Provider(
        "google-cloud-build",
        # Cloud Build exports nothing by default: its BUILD_ID, PROJECT_ID... are
        # substitutions, passed to a step only through its `env:`. The pair commonly passed
        # is required, with BUILD_ID in Cloud Build's UUID form, and the entry comes last
        # (Jenkins and TeamCity use BUILD_ID and BUILD_NUMBER too).
        (("BUILD_ID", _UUID), ("PROJECT_ID", None)),
        {
            "run_id": "BUILD_ID",
            "url": (
                "https://console.cloud.google.com/cloud-build/builds/{BUILD_ID}"
                "?project={PROJECT_ID}"
            ),
            "commit": "COMMIT_SHA",
            # _HEAD_BRANCH: a GitHub pull request trigger's source branch.
            "branch": ("_HEAD_BRANCH", "BRANCH_NAME"),
            "pull_request": "_PR_NUMBER",
        },
        # All steps of a build share it; a step has no name in the environment.
        group="BUILD_ID",
    ),
)


def _templates(field: _Field) -> tuple[str, ...]:
    alternatives = (field,) if isinstance(field, str) else field
    return tuple(t if "{" in t else "{" + t + "}" for t in alternatives)


@functools.cache
def _parsed(template: str) -> tuple[tuple[str, str | None, str], ...]:
    """(literal text, variable or None, format spec) pieces of *template*, parsed once."""
    return tuple(
        (literal, name or None, spec or "")
        for literal, name, spec, _ in string.Formatter().parse(template)
    )


def _variables(field: _Field | None) -> set[str]:
    if field is None:
        return set()
    return {name for t in _templates(field) for _, name, _ in _parsed(t) if name}


def _provider_variables(provider: _Provider) -> set[str]:
    shard = provider.shard
    return (
        {name for name, _ in provider.detect}
        | {v for field in provider.fields.values() for v in _variables(field)}
        | _variables(provider.group)
        | {v for v in (shard.index, shard.total) if v}
        | _variables(shard.name)
    )


# Every variable the CI detection reads (the tests clear them, so that a suite run on CI
# records its inner runs as it would anywhere else).
CI_VARIABLES = frozenset({"CI"}.union(*(_provider_variables(p) for p in _PROVIDERS)))
_CI_VARIABLES = CI_VARIABLES

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
# A number, a GitHub pull ref or URL, or CodeBuild's "pr/<number>" webhook trigger.
_PR_NUMBER = re.compile(r"(?:refs/pull/|https?://\S+/pull/|pr/)?(\d+)(?:/merge|/head)?")
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


def _render(field: _Field, environ: Mapping[str, str], escape: bool = False) -> str | None:
    for template in _templates(field):
        parts = _parsed(template)
        names = [name for _, name, _ in parts if name]
        if not all(environ.get(name) for name in names):
            continue
        # Pieces of a composed URL are escaped (Azure project names may contain spaces).
        quoted = escape and len(names) > 1
        pieces = []
        for literal, name, spec in parts:
            pieces.append(literal)
            if name:
                value = quote(environ[name], safe=":/%") if quoted else environ[name]
                pieces.append(format(value, spec))
        return "".join(pieces)
    return None


def _detect(environ: Mapping[str, str]) -> _Provider | None:
    for provider in _PROVIDERS:
        if all(
            _truthy(environ.get(name))
            if pattern is None
            else pattern.fullmatch(environ.get(name, "").strip()) is not None
            for name, pattern in provider.detect
        ):
            return provider
    return None


def _position(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _shard(shard: _Shard, environ: Mapping[str, str]) -> str | None:
    index = _position(environ.get(shard.index)) if shard.index else None
    if index is not None and index + 1 - shard.base >= 1:
        position = index + 1 - shard.base
        total = _position(environ.get(shard.total)) if shard.total else None
        # A total smaller than the position is inconsistent: the position alone is kept.
        return f"{position}/{total}" if total is not None and total >= position else str(position)
    return _render(shard.name, environ) if shard.name else None


def _run_group(provider: _Provider, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    group = _render(provider.group, environ) if provider.group else None
    shard = _shard(provider.shard, environ)
    return (
        _clean(group) if group is not None else None,
        _clean(shard) if shard is not None else None,
    )


def ci_run_group(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(group, shard) of the CI job running: the id every job of the pipeline run shares,
    and which of those jobs this is ("2/4", "2" or the job's name); (None, None) outside CI.

    Called in pytest's process: dictionary reads and string formatting only.
    """
    provider = _detect(environ)
    return (None, None) if provider is None else _run_group(provider, environ)


def ci_info(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Identify the CI provider and run, or None when not running on CI."""
    provider = _detect(environ)
    if provider is None:
        return {"provider": "unknown"} if _truthy(environ.get("CI")) else None
    info = {"provider": provider.name}
    for key, field in provider.fields.items():
        value = _render(field, environ, escape=key in _URL_KEYS)
        if value is not None and key == "pull_request":
            # Keep the number only; drops Buildkite's "false" and GitHub branch refs.
            match = _PR_NUMBER.fullmatch(value)
            value = match.group(1) if match else None
        elif value is not None and key == "branch":
            value = value.removeprefix("refs/heads/")  # CodeBuild's head ref
        if value is not None:
            info[key] = _clean(value)
    group, shard = _run_group(provider, environ)
    if group is not None:
        info["group"] = group
    if shard is not None:
        info["shard"] = shard
    return info


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
