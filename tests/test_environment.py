from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun

from pytest_stepflow import environment
from pytest_stepflow.environment import (
    ENVIRONMENT_ALLOW_LIST,
    ci_info,
    ci_run_group,
    collect_environment,
    git_info,
    looks_secret,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    identity = [
        "-c",
        "user.email=test@example.com",
        "-c",
        "user.name=Test",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ]
    result = subprocess.run(
        ["git", *identity, *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout.strip()


@pytest.fixture
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Ignore the developer's git config and any repository enclosing tmp_path.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def repo(isolated_git: Path) -> Path:
    path = isolated_git / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "tracked.txt").write_text("one\n")
    git(path, "add", "tracked.txt")
    git(path, "commit", "-q", "-m", "initial")
    return path


@needs_git
def test_git_info_clean_repo(repo: Path) -> None:
    info = git_info(repo)
    assert info == {"commit": git(repo, "rev-parse", "HEAD"), "branch": "main", "dirty": False}
    assert len(str(info["commit"])) == 40


@needs_git
def test_git_info_from_subdirectory_and_other_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature/x")
    (repo / "sub").mkdir()
    info = git_info(repo / "sub")
    assert info is not None
    assert info["branch"] == "feature/x"


@needs_git
def test_git_info_dirty_only_for_tracked_changes(repo: Path) -> None:
    (repo / "untracked.txt").write_text("new\n")
    info = git_info(repo)
    assert info is not None
    assert info["dirty"] is False
    (repo / "tracked.txt").write_text("two\n")
    info = git_info(repo)
    assert info is not None
    assert info["dirty"] is True


@needs_git
def test_git_info_staged_change_is_dirty(repo: Path) -> None:
    (repo / "tracked.txt").write_text("staged\n")
    git(repo, "add", "tracked.txt")
    info = git_info(repo)
    assert info is not None
    assert info["dirty"] is True


@needs_git
def test_git_info_detached_head(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    assert git_info(repo) == {"commit": sha, "branch": None, "dirty": False}


@needs_git
def test_git_info_not_a_repository(isolated_git: Path) -> None:
    plain = isolated_git / "plain"
    plain.mkdir()
    assert git_info(plain) is None


@needs_git
def test_git_info_repository_without_commits(isolated_git: Path) -> None:
    git(isolated_git, "init", "-q")
    assert git_info(isolated_git) is None


def test_git_info_missing_directory(isolated_git: Path) -> None:
    assert git_info(isolated_git / "does-not-exist") is None


def test_git_info_git_not_installed(isolated_git: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(isolated_git))  # a directory without a git executable
    assert git_info(isolated_git) is None


@needs_git
def test_git_info_timeout_returns_none(repo: Path) -> None:
    assert git_info(repo, timeout=1e-6) is None


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "MY_API_KEY",
        "STRIPE_APIKEY",
        "DB_PASSWORD",
        "DB_PASS",
        "pgpasswd",
        "GPG_PASSPHRASE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "NPM_AUTH",
        "SSH_PRIVATE_KEY",
        "SSH_KEY",
        "signing-key",
        "KEY",
        "HTTP_COOKIE",
        "SESSION_ID",
        "SIGNATURE",
        "SSL_CERT_FILE",
        "PASSWORD_SALT",
        "CI_JOB_TOKEN",
    ],
)
def test_looks_secret(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "KEYBOARD_LAYOUT",
        "KEYBOARD",
        "MONKEY",
        "MONKEYPATCH_MODE",
        "TURKEY_KEYS",
        "BYPASS_CACHE",
        "PATH",
        "LANG",
        "PYTHONHASHSEED",
        "GITHUB_SHA",
        "CIRCLE_BUILD_NUM",
    ],
)
def test_looks_secret_false_positives(name: str) -> None:
    assert not looks_secret(name)


def test_allow_list_has_no_secret_looking_names() -> None:
    assert sorted(n for n in ENVIRONMENT_ALLOW_LIST if looks_secret(n)) == []


def test_collect_environment_keeps_only_allow_listed() -> None:
    environ = {
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONHASHSEED": "0",
        "HOME": "/home/me",
        "PATH": "/usr/bin",
        "GITHUB_RUN_ID": "42",
        "SHELL": "/bin/zsh",
    }
    assert collect_environment(environ) == {
        "GITHUB_RUN_ID": "42",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "TZ": "UTC",
    }


SECRETS = {
    "GITHUB_TOKEN": "ghp_x",
    "AWS_SECRET_ACCESS_KEY": "aws_x",
    "MY_API_KEY": "key_x",
    "DB_PASSWORD": "pw_x",
    "CI_JOB_TOKEN": "job_x",
}


def test_collect_environment_drops_secrets_even_if_allow_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extended = ENVIRONMENT_ALLOW_LIST | SECRETS.keys()
    monkeypatch.setattr(environment, "ENVIRONMENT_ALLOW_LIST", extended)
    collected = collect_environment({**SECRETS, "CI": "true", "GITHUB_ACTIONS": "true"})
    assert collected == {"CI": "true", "GITHUB_ACTIONS": "true"}
    assert not any(v in str(collected) for v in SECRETS.values())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://user:s3cret@jenkins.example/job/1/", "https://***@jenkins.example/job/1/"),
        ("https://ghp_abc@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://user:p@ss@host/x a://u:v@h", "https://***@host/x a://***@h"),
        ("git+ssh://git@host:22/r", "git+ssh://***@host:22/r"),
        ("https://host/path@v1?x=1", "https://host/path@v1?x=1"),
        ("/usr/lib/python:/opt/lib", "/usr/lib/python:/opt/lib"),
    ],
)
def test_url_credentials_redacted(value: str, expected: str) -> None:
    assert collect_environment({"PYTHONPATH": value}) == {"PYTHONPATH": expected}


def test_long_values_truncated_after_redaction() -> None:
    assert collect_environment({"PYTHONPATH": "a" * 5000})["PYTHONPATH"] == "a" * 4096
    # The URL straddles the cut: redacting first means no part of the password survives.
    value = "a" * 4080 + " https://user:hunter2@host/"
    collected = collect_environment({"PYTHONPATH": value})["PYTHONPATH"]
    assert len(collected) == 4096
    assert collected.endswith("https://***@hos")


PROVIDER_CASES = [
    pytest.param(
        {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "acme/app",
            "GITHUB_RUN_ID": "9876543210",
            "GITHUB_RUN_NUMBER": "77",
            "GITHUB_RUN_ATTEMPT": "2",
            "GITHUB_JOB": "test",
            "GITHUB_WORKFLOW": "CI",
            "GITHUB_REF": "refs/pull/42/merge",
            "GITHUB_REF_NAME": "42/merge",
            "GITHUB_HEAD_REF": "feature",
            "GITHUB_SHA": "a" * 40,
            "GITHUB_TOKEN": "ghs_secret",
        },
        {
            "provider": "github-actions",
            "run_id": "9876543210",
            "run_number": "77",
            "run_attempt": "2",
            "job": "test",
            "workflow": "CI",
            "url": "https://github.com/acme/app/actions/runs/9876543210",
            "branch": "feature",
            "commit": "a" * 40,
            "pull_request": "42",
            "group": "9876543210-2",
            "shard": "test",
        },
        id="github-actions",
    ),
    pytest.param(
        {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_PIPELINE_ID": "1001",
            "CI_JOB_ID": "2002",
            "CI_JOB_NAME": "pytest",
            "CI_JOB_URL": "https://gitlab.com/acme/app/-/jobs/2002",
            "CI_PIPELINE_URL": "https://gitlab.com/acme/app/-/pipelines/1001",
            "CI_COMMIT_SHA": "b" * 40,
            "CI_COMMIT_REF_NAME": "main",
            "CI_JOB_TOKEN": "secret",
        },
        {
            "provider": "gitlab-ci",
            "run_id": "1001",
            "job_id": "2002",
            "job": "pytest",
            "url": "https://gitlab.com/acme/app/-/pipelines/1001",
            "job_url": "https://gitlab.com/acme/app/-/jobs/2002",
            "commit": "b" * 40,
            "branch": "main",
            "group": "1001",
            "shard": "pytest",
        },
        id="gitlab-ci",
    ),
    pytest.param(
        {
            "JENKINS_URL": "https://ci.example/",
            "BUILD_NUMBER": "15",
            "BUILD_ID": "15",
            "BUILD_URL": "https://ci.example/job/app/15/",
            "BUILD_TAG": "jenkins-app-15",
            "JOB_NAME": "app",
            "GIT_COMMIT": "c" * 40,
            "GIT_BRANCH": "origin/main",
        },
        {
            "provider": "jenkins",
            "run_id": "15",
            "run_number": "15",
            "job": "app",
            "url": "https://ci.example/job/app/15/",
            "commit": "c" * 40,
            "branch": "origin/main",
            "group": "jenkins-app-15",
        },
        id="jenkins",
    ),
    pytest.param(
        {
            "CI": "true",
            "CIRCLECI": "true",
            "CIRCLE_WORKFLOW_ID": "wf-uuid",
            "CIRCLE_BUILD_NUM": "321",
            "CIRCLE_BUILD_URL": "https://circleci.com/gh/acme/app/321",
            "CIRCLE_JOB": "build",
            "CIRCLE_NODE_INDEX": "2",
            "CIRCLE_NODE_TOTAL": "4",
            "CIRCLE_SHA1": "d" * 40,
            "CIRCLE_BRANCH": "dev",
            "CIRCLE_PULL_REQUEST": "https://github.com/acme/app/pull/7",
        },
        {
            "provider": "circleci",
            "run_id": "wf-uuid",
            "run_number": "321",
            "job": "build",
            "url": "https://circleci.com/gh/acme/app/321",
            "commit": "d" * 40,
            "branch": "dev",
            "pull_request": "7",
            "group": "wf-uuid",
            "shard": "3/4",
        },
        id="circleci",
    ),
    pytest.param(
        {
            "CI": "true",
            "BUILDKITE": "true",
            "BUILDKITE_BUILD_ID": "bk-uuid",
            "BUILDKITE_BUILD_NUMBER": "88",
            "BUILDKITE_JOB_ID": "job-uuid",
            "BUILDKITE_LABEL": ":pytest: tests",
            "BUILDKITE_PARALLEL_JOB": "0",
            "BUILDKITE_PARALLEL_JOB_COUNT": "3",
            "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/app/builds/88",
            "BUILDKITE_COMMIT": "e" * 40,
            "BUILDKITE_BRANCH": "main",
            "BUILDKITE_PULL_REQUEST": "false",
            "BUILDKITE_AGENT_ACCESS_TOKEN": "secret",
        },
        {
            "provider": "buildkite",
            "run_id": "bk-uuid",
            "run_number": "88",
            "job_id": "job-uuid",
            "job": ":pytest: tests",
            "url": "https://buildkite.com/acme/app/builds/88",
            "commit": "e" * 40,
            "branch": "main",
            "group": "bk-uuid",
            "shard": "1/3",
        },
        id="buildkite",
    ),
    pytest.param(
        {
            "TF_BUILD": "True",
            "BUILD_BUILDID": "1234",
            "BUILD_BUILDNUMBER": "20240101.1",
            "SYSTEM_JOBID": "job-guid",
            "SYSTEM_JOBPOSITIONINPHASE": "2",
            "SYSTEM_TOTALJOBSINPHASE": "2",
            "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/",
            "SYSTEM_TEAMPROJECT": "Web Shop",
            "BUILD_SOURCEVERSION": "f" * 40,
            "BUILD_SOURCEBRANCHNAME": "main",
            "SYSTEM_PULLREQUEST_PULLREQUESTID": "55",
        },
        {
            "provider": "azure-pipelines",
            "run_id": "1234",
            "run_number": "20240101.1",
            "job_id": "job-guid",
            "url": "https://dev.azure.com/acme/Web%20Shop/_build/results?buildId=1234",
            "commit": "f" * 40,
            "branch": "main",
            "pull_request": "55",
            "group": "1234",
            "shard": "2/2",
        },
        id="azure-pipelines",
    ),
]


@pytest.mark.parametrize(("environ", "expected"), PROVIDER_CASES)
def test_ci_info_providers(environ: dict[str, str], expected: dict[str, str]) -> None:
    assert ci_info(environ) == expected


@pytest.mark.parametrize(("environ", "expected"), PROVIDER_CASES)
def test_ci_run_group_is_ci_info_group_and_shard(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert ci_run_group(environ) == (expected.get("group"), expected.get("shard"))


@pytest.mark.parametrize(("environ", "expected"), PROVIDER_CASES)
def test_collect_environment_keeps_ci_run_variables(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    collected = collect_environment(environ)
    assert set(collected) == {n for n in environ if not looks_secret(n)}
    assert not any("secret" in value for value in collected.values())


def test_ci_info_github_push_uses_ref_name_and_has_no_pull_request() -> None:
    info = ci_info(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_REF": "refs/heads/release-2",
            "GITHUB_REF_NAME": "release-2",
            "GITHUB_HEAD_REF": "",
        }
    )
    assert info == {"provider": "github-actions", "branch": "release-2"}


def test_ci_info_redacts_url_credentials() -> None:
    info = ci_info(
        {"JENKINS_URL": "https://ci.example/", "BUILD_URL": "https://bot:hunter2@ci.example/job/1/"}
    )
    assert info == {"provider": "jenkins", "url": "https://***@ci.example/job/1/"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"CI": "false"}, None),
        ({"CI": ""}, None),
        ({"CI": "true"}, {"provider": "unknown"}),
        ({"CI": "1", "GITHUB_ACTIONS": "false"}, {"provider": "unknown"}),
        ({"GITLAB_CI": "true"}, {"provider": "gitlab-ci"}),
    ],
)
def test_ci_info_detection(environ: dict[str, str], expected: dict[str, str] | None) -> None:
    assert ci_info(environ) == expected


def test_platform_metadata() -> None:
    import pluggy

    from pytest_stepflow.plugin.execution import platform_metadata

    metadata = platform_metadata("1.2.3")
    assert metadata == {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "pytest": pytest.__version__,
        "stepflow": "1.2.3",
        "pluggy": pluggy.__version__,
    }


# What a recorded execution carries: the writer process adds the OS, git and CI details to
# the platform metadata (collect_metadata, which composed the same in-process, was unused).


def _outside_ci_and_git(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    for name, value in list(os.environ.items()):
        if ci_info({name: value}) is not None:  # whatever CI this suite itself runs on
            monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root.parent))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


@needs_git
def test_recorded_metadata_with_git_and_ci(
    pytester: pytest.Pytester,
    run_stepflow: Callable[..., StepflowRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _outside_ci_and_git(monkeypatch, pytester.path)
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("CI_PIPELINE_ID", "5")
    pytester.makepyfile("def test_a(): pass")
    git(pytester.path, "init", "-q")
    git(pytester.path, "add", ".")
    git(pytester.path, "commit", "-q", "-m", "initial")
    metadata = run_stepflow().metadata
    assert metadata["ci"] == {"provider": "gitlab-ci", "run_id": "5", "group": "5"}
    assert metadata["git"] == git_info(pytester.path)
    assert metadata["git"] is not None


def test_recorded_metadata_omits_unknown_git_and_ci(
    pytester: pytest.Pytester,
    run_stepflow: Callable[..., StepflowRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _outside_ci_and_git(monkeypatch, pytester.path)
    pytester.makepyfile("def test_a(): pass")
    metadata = run_stepflow().metadata
    assert "git" not in metadata
    assert "ci" not in metadata
    assert metadata["python"] == platform.python_version()
    assert metadata["platform"] == platform.platform()
