"""CI providers beyond the first six, and the group/shard of a run across CI jobs.

Each environment is built from the variables the provider documents, with realistic values.
"""

from __future__ import annotations

import builtins
import itertools
import os
import subprocess

import pytest

from pytest_stepflow.environment import (
    ENVIRONMENT_ALLOW_LIST,
    MAX_VALUE_LENGTH,
    ci_info,
    ci_run_group,
    collect_environment,
    looks_secret,
)

SHA = "5c84719708b9b649b9ef3b56af214f38cee6acde"
UUID = "3d7e5f3a-9c1b-4a2e-8f6d-0b1c2d3e4f5a"

NEW_PROVIDER_CASES = [
    pytest.param(
        {
            "CI": "true",
            "TRAVIS": "true",
            "TRAVIS_BUILD_ID": "46812085",
            "TRAVIS_BUILD_NUMBER": "60",
            "TRAVIS_JOB_ID": "46812086",
            "TRAVIS_JOB_NUMBER": "60.1",
            "TRAVIS_JOB_NAME": "",
            "TRAVIS_BUILD_WEB_URL": "https://app.travis-ci.com/github/acme/app/builds/46812085",
            "TRAVIS_JOB_WEB_URL": "https://app.travis-ci.com/github/acme/app/jobs/46812086",
            "TRAVIS_COMMIT": SHA,
            "TRAVIS_BRANCH": "main",
            "TRAVIS_PULL_REQUEST": "12",
            "TRAVIS_PULL_REQUEST_BRANCH": "feature",
            "GITHUB_AUTH_TOKEN": "[secure]",
        },
        {
            "provider": "travis-ci",
            "run_id": "46812085",
            "run_number": "60",
            "job_id": "46812086",
            "job": "60.1",
            "url": "https://app.travis-ci.com/github/acme/app/builds/46812085",
            "job_url": "https://app.travis-ci.com/github/acme/app/jobs/46812086",
            "commit": SHA,
            "branch": "feature",
            "pull_request": "12",
            "group": "46812085",
            "shard": "60.1",
        },
        id="travis-ci",
    ),
    pytest.param(
        {
            "CI": "true",
            "BITBUCKET_BUILD_NUMBER": "127",
            "BITBUCKET_PIPELINE_UUID": "{5d1b8c2e-4f0a-4b7e-9c3d-2a6f1e8b9c0d}",
            "BITBUCKET_STEP_UUID": "{0f3a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b}",
            "BITBUCKET_GIT_HTTP_ORIGIN": "http://bitbucket.org/acme/app",
            "BITBUCKET_REPO_FULL_NAME": "acme/app",
            "BITBUCKET_COMMIT": SHA,
            "BITBUCKET_BRANCH": "feature/x",
            "BITBUCKET_PR_ID": "7",
            "BITBUCKET_PARALLEL_STEP": "1",
            "BITBUCKET_PARALLEL_STEP_COUNT": "3",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
        {
            "provider": "bitbucket-pipelines",
            "run_id": "{5d1b8c2e-4f0a-4b7e-9c3d-2a6f1e8b9c0d}",
            "run_number": "127",
            "job_id": "{0f3a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b}",
            "url": "http://bitbucket.org/acme/app/pipelines/results/127",
            "commit": SHA,
            "branch": "feature/x",
            "pull_request": "7",
            "group": "{5d1b8c2e-4f0a-4b7e-9c3d-2a6f1e8b9c0d}",
            "shard": "2/3",  # zero-based step 1 of 3
        },
        id="bitbucket-pipelines",
    ),
    pytest.param(
        {
            "TEAMCITY_VERSION": "2025.07 (build 197242)",
            "TEAMCITY_PROJECT_NAME": "App",
            "TEAMCITY_BUILDCONF_NAME": "Unit tests",
            "BUILD_NUMBER": "1.4.211",
            "BUILD_URL": "https://tc.example.com/buildConfiguration/App_UnitTests/8812",
            "BUILD_VCS_NUMBER": SHA,
            "TEAMCITY_AUTH_PASSWORD": "secret",
        },
        {
            "provider": "teamcity",
            "run_id": "1.4.211",
            "run_number": "1.4.211",
            "job": "Unit tests",
            "url": "https://tc.example.com/buildConfiguration/App_UnitTests/8812",
            "commit": SHA,
            # TeamCity passes no branch to the build's environment.
            "group": "https://tc.example.com/buildConfiguration/App_UnitTests/8812",
            "shard": "Unit tests",
        },
        id="teamcity",
    ),
    pytest.param(
        {
            "CI": "True",
            "APPVEYOR": "True",
            "APPVEYOR_URL": "https://ci.appveyor.com",
            "APPVEYOR_ACCOUNT_NAME": "tonyo",
            "APPVEYOR_PROJECT_SLUG": "alpaga",
            "APPVEYOR_BUILD_ID": "16428432",
            "APPVEYOR_BUILD_NUMBER": "7",
            "APPVEYOR_JOB_ID": "v8xadmxjx5ys0fhw",
            "APPVEYOR_JOB_NAME": "Environment: PYTHON=3.12",
            "APPVEYOR_JOB_NUMBER": "2",
            "APPVEYOR_REPO_COMMIT": SHA,
            "APPVEYOR_REPO_BRANCH": "master",
            "APPVEYOR_PULL_REQUEST_HEAD_REPO_BRANCH": "pr-vicugna",
            "APPVEYOR_PULL_REQUEST_NUMBER": "5",
            "APPVEYOR_API_TOKEN": "secret",
        },
        {
            "provider": "appveyor",
            "run_id": "16428432",
            "run_number": "7",
            "job_id": "v8xadmxjx5ys0fhw",
            "job": "Environment: PYTHON=3.12",
            "url": "https://ci.appveyor.com/project/tonyo/alpaga/builds/16428432",
            "job_url": "https://ci.appveyor.com/project/tonyo/alpaga/build/job/v8xadmxjx5ys0fhw",
            "commit": SHA,
            "branch": "pr-vicugna",
            "pull_request": "5",
            "group": "16428432",
            "shard": "2",  # the job's position in the matrix, with no total
        },
        id="appveyor",
    ),
    pytest.param(
        {
            "CI": "woodpecker",
            "CI_REPO": "john-doe/my-repo",
            "CI_PIPELINE_NUMBER": "8",
            "CI_PIPELINE_URL": "https://ci.example.com/repos/7/pipeline/8",
            "CI_STEP_URL": "https://ci.example.com/repos/7/pipeline/8/3",
            "CI_WORKFLOW_NAME": "test",
            "CI_COMMIT_SHA": SHA,
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_SOURCE_BRANCH": "issue-branch",
            "CI_COMMIT_PULL_REQUEST": "1",
            "CI_NETRC_PASSWORD": "secret",
        },
        {
            "provider": "woodpecker",
            "run_id": "8",
            "run_number": "8",
            "job": "test",
            "url": "https://ci.example.com/repos/7/pipeline/8",
            "job_url": "https://ci.example.com/repos/7/pipeline/8/3",
            "commit": SHA,
            "branch": "issue-branch",
            "pull_request": "1",
            "group": "john-doe/my-repo#8",
            "shard": "test",
        },
        id="woodpecker",
    ),
    pytest.param(
        {
            "CI": "true",
            "DRONE": "true",
            "DRONE_REPO": "octocat/hello-world",
            "DRONE_BUILD_NUMBER": "42",
            "DRONE_BUILD_LINK": "https://drone.company.com/octocat/hello-world/42",
            "DRONE_STAGE_NAME": "build",
            "DRONE_COMMIT_SHA": SHA,
            "DRONE_BRANCH": "master",
            "DRONE_SOURCE_BRANCH": "feature/develop",
            "DRONE_PULL_REQUEST": "42",
            "DRONE_NETRC_PASSWORD": "secret",
        },
        {
            "provider": "drone",
            "run_id": "42",
            "run_number": "42",
            "job": "build",
            "url": "https://drone.company.com/octocat/hello-world/42",
            "commit": SHA,
            "branch": "feature/develop",
            "pull_request": "42",
            "group": "octocat/hello-world#42",
            "shard": "build",
        },
        id="drone",
    ),
    pytest.param(
        {
            "CODEBUILD_BUILD_ID": "codebuild-demo-project:b1e6661e-e4f2-4156-9ab9-82a19EXAMPLE",
            "CODEBUILD_BUILD_NUMBER": "17",
            "CODEBUILD_INITIATOR": "codebuild-demo-project/AWSCodeBuild-a14fc8e3-b5d6-42f9",
            "CODEBUILD_BATCH_BUILD_IDENTIFIER": "build2",
            "CODEBUILD_PUBLIC_BUILD_URL": "https://public-build.example.com/builds/b1e6661e",
            "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
            "CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/feature",
            "CODEBUILD_WEBHOOK_TRIGGER": "pr/25",
            "CODEBUILD_KMS_KEY_ID": "arn:aws:kms:us-east-1:123456789012:key/abc",
        },
        {
            "provider": "aws-codebuild",
            "run_id": "codebuild-demo-project:b1e6661e-e4f2-4156-9ab9-82a19EXAMPLE",
            "run_number": "17",
            "job": "build2",
            "url": "https://public-build.example.com/builds/b1e6661e",
            "commit": SHA,
            "branch": "feature",
            "pull_request": "25",
            # Builds of a batch: the batch that started them.
            "group": "codebuild-demo-project/AWSCodeBuild-a14fc8e3-b5d6-42f9",
            "shard": "build2",
        },
        id="aws-codebuild",
    ),
    pytest.param(
        {
            "CI": "true",
            "BITRISE_IO": "true",
            "BITRISE_BUILD_SLUG": "a1b2c3d4e5f60718",
            "BITRISE_BUILD_NUMBER": "311",
            "BITRISE_BUILD_URL": "https://app.bitrise.io/build/a1b2c3d4e5f60718",
            "BITRISE_TRIGGERED_WORKFLOW_ID": "test_without_building",
            "BITRISEIO_PIPELINE_ID": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "BITRISE_GIT_COMMIT": SHA,
            "BITRISE_GIT_BRANCH": "feature",
            "BITRISE_PULL_REQUEST": "91",
            "BITRISE_IO_PARALLEL_INDEX": "3",
            "BITRISE_IO_PARALLEL_TOTAL": "5",
            "BITRISE_CERTIFICATE_PASSPHRASE": "secret",
        },
        {
            "provider": "bitrise",
            "run_id": "a1b2c3d4e5f60718",
            "run_number": "311",
            "job": "test_without_building",
            "url": "https://app.bitrise.io/build/a1b2c3d4e5f60718",
            "commit": SHA,
            "branch": "feature",
            "pull_request": "91",
            "group": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "shard": "4/5",  # zero-based copy 3 of 5
        },
        id="bitrise",
    ),
    pytest.param(
        {
            "CI": "true",
            "SEMAPHORE": "true",
            "SEMAPHORE_WORKFLOW_ID": "0dd982e8-32f5-4037-983e-4de01ac7fb1e",
            "SEMAPHORE_WORKFLOW_NUMBER": "42",
            "SEMAPHORE_PIPELINE_ID": "ea3e6bba-d19a-45d7-86a0-e78a2301b616",
            "SEMAPHORE_JOB_ID": "a26d42cf-89ac-4c3f-9e2d-51bb231897bf",
            "SEMAPHORE_JOB_NAME": "pytest",
            "SEMAPHORE_JOB_INDEX": "2",
            "SEMAPHORE_JOB_COUNT": "4",
            "SEMAPHORE_ORGANIZATION_URL": "https://my-org.semaphoreci.com",
            "SEMAPHORE_GIT_SHA": SHA,
            "SEMAPHORE_GIT_BRANCH": "main",
            "SEMAPHORE_GIT_WORKING_BRANCH": "featureA",
            "SEMAPHORE_GIT_PR_NUMBER": "3",
            "SEMAPHORE_CACHE_PRIVATE_KEY_PATH": "/home/semaphore/.ssh/cache",
        },
        {
            "provider": "semaphore",
            "run_id": "0dd982e8-32f5-4037-983e-4de01ac7fb1e",
            "run_number": "42",
            "job_id": "a26d42cf-89ac-4c3f-9e2d-51bb231897bf",
            "job": "pytest",
            "url": "https://my-org.semaphoreci.com/workflows/0dd982e8-32f5-4037-983e-4de01ac7fb1e",
            "job_url": "https://my-org.semaphoreci.com/jobs/a26d42cf-89ac-4c3f-9e2d-51bb231897bf",
            "commit": SHA,
            "branch": "featureA",
            "pull_request": "3",
            "group": "ea3e6bba-d19a-45d7-86a0-e78a2301b616",
            "shard": "2/4",  # SEMAPHORE_JOB_INDEX is 1-based
        },
        id="semaphore",
    ),
    pytest.param(
        {
            "CI": "true",
            "CF_BUILD_ID": "65f1e0c2a9b8c7d6e5f4a3b2",
            "CF_BUILD_URL": "https://g.codefresh.io/build/65f1e0c2a9b8c7d6e5f4a3b2",
            "CF_PIPELINE_NAME": "app/ci",
            "CF_STEP_NAME": "unit_tests",
            "CF_REVISION": SHA,
            "CF_BRANCH": "feature",
            "CF_PULL_REQUEST_NUMBER": "17",
            "CF_API_KEY": "secret",
        },
        {
            "provider": "codefresh",
            "run_id": "65f1e0c2a9b8c7d6e5f4a3b2",
            "job": "unit_tests",
            "workflow": "app/ci",
            "url": "https://g.codefresh.io/build/65f1e0c2a9b8c7d6e5f4a3b2",
            "commit": SHA,
            "branch": "feature",
            "pull_request": "17",
            "group": "65f1e0c2a9b8c7d6e5f4a3b2",
            "shard": "unit_tests",
        },
        id="codefresh",
    ),
    pytest.param(
        {
            # Passed through a step's `env:` from Cloud Build's substitutions.
            "BUILD_ID": UUID,
            "PROJECT_ID": "acme-ci",
            "COMMIT_SHA": SHA,
            "BRANCH_NAME": "main",
            "_HEAD_BRANCH": "feature",
            "_PR_NUMBER": "33",
            "GOOGLE_APPLICATION_CREDENTIALS": "/workspace/key.json",
        },
        {
            "provider": "google-cloud-build",
            "run_id": UUID,
            "url": f"https://console.cloud.google.com/cloud-build/builds/{UUID}?project=acme-ci",
            "commit": SHA,
            "branch": "feature",
            "pull_request": "33",
            "group": UUID,
            # A step has no name in the environment: no shard.
        },
        id="google-cloud-build",
    ),
]


@pytest.mark.parametrize(("environ", "expected"), NEW_PROVIDER_CASES)
def test_ci_info_new_providers(environ: dict[str, str], expected: dict[str, str]) -> None:
    assert ci_info(environ) == expected


@pytest.mark.parametrize(("environ", "expected"), NEW_PROVIDER_CASES)
def test_ci_run_group_new_providers(environ: dict[str, str], expected: dict[str, str]) -> None:
    assert ci_run_group(environ) == (expected["group"], expected.get("shard"))


@pytest.mark.parametrize(("environ", "expected"), NEW_PROVIDER_CASES)
def test_collect_environment_keeps_new_provider_variables_and_hides_secrets(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    collected = collect_environment(environ)
    secrets = {name for name in environ if looks_secret(name)}
    assert secrets  # each case carries one secret-looking variable
    assert set(collected) == set(environ) - secrets
    assert not secrets & ENVIRONMENT_ALLOW_LIST


def test_allow_list_has_every_group_and_shard_variable() -> None:
    read_for_group_or_shard = {
        # github-actions, gitlab-ci, jenkins, circleci, buildkite, azure-pipelines
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_JOB",
        "CI_NODE_INDEX",
        "CI_NODE_TOTAL",
        "BUILD_TAG",
        "STAGE_NAME",
        "CIRCLE_NODE_INDEX",
        "CIRCLE_NODE_TOTAL",
        "BUILDKITE_PARALLEL_JOB",
        "BUILDKITE_PARALLEL_JOB_COUNT",
        "SYSTEM_JOBPOSITIONINPHASE",
        "SYSTEM_TOTALJOBSINPHASE",
        # the new providers
        "TRAVIS_BUILD_ID",
        "BITBUCKET_PIPELINE_UUID",
        "BITBUCKET_REPO_FULL_NAME",
        "BITBUCKET_PARALLEL_STEP",
        "BITBUCKET_PARALLEL_STEP_COUNT",
        "TEAMCITY_VERSION",
        "TEAMCITY_PROJECT_NAME",
        "APPVEYOR_JOB_NUMBER",
        "CI_REPO",
        "DRONE_REPO",
        "CODEBUILD_INITIATOR",
        "CODEBUILD_BATCH_BUILD_IDENTIFIER",
        "BITRISEIO_PIPELINE_ID",
        "BITRISE_IO_PARALLEL_INDEX",
        "BITRISE_IO_PARALLEL_TOTAL",
        "SEMAPHORE_PIPELINE_ID",
        "SEMAPHORE_JOB_INDEX",
        "SEMAPHORE_JOB_COUNT",
        "CF_STEP_NAME",
        "PROJECT_ID",
    }
    assert read_for_group_or_shard - ENVIRONMENT_ALLOW_LIST == set()


@pytest.mark.parametrize(
    "name",
    [
        "BITRISE_TRIGGER_TOKEN",
        "BITRISE_CERTIFICATE_PASSPHRASE",
        "BITRISEIO_ANDROID_KEYSTORE_PASSWORD",
        "CF_API_KEY",
        "CF_API_TOKEN",
        "CI_NETRC_PASSWORD",
        "DRONE_NETRC_PASSWORD",
        "CODEBUILD_KMS_KEY_ID",
        "APPVEYOR_API_TOKEN",
        "SEMAPHORE_CACHE_PRIVATE_KEY_PATH",
    ],
)
def test_new_provider_secrets_stay_hidden(name: str) -> None:
    assert looks_secret(name)
    assert name not in ENVIRONMENT_ALLOW_LIST
    assert collect_environment({name: "value", "CI": "true"}) == {"CI": "true"}


# -- shard rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "shard"),
    [
        # zero-based positions become 1-based
        ({"CIRCLECI": "true", "CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "4"}, "1/4"),
        ({"CIRCLECI": "true", "CIRCLE_NODE_INDEX": "3", "CIRCLE_NODE_TOTAL": "4"}, "4/4"),
        (
            {"BUILDKITE": "true", "BUILDKITE_PARALLEL_JOB": "0"}
            | {"BUILDKITE_PARALLEL_JOB_COUNT": "2"},
            "1/2",
        ),
        (
            {"BITBUCKET_BUILD_NUMBER": "3", "BITBUCKET_PARALLEL_STEP": "0"}
            | {"BITBUCKET_PARALLEL_STEP_COUNT": "5"},
            "1/5",
        ),
        # one-based positions are kept
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"}, "1/4"),
        (
            {"TF_BUILD": "True", "SYSTEM_JOBPOSITIONINPHASE": "3"}
            | {"SYSTEM_TOTALJOBSINPHASE": "3"},
            "3/3",
        ),
        ({"SEMAPHORE": "true", "SEMAPHORE_JOB_INDEX": "1", "SEMAPHORE_JOB_COUNT": "2"}, "1/2"),
        # a position without a total
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "3"}, "3"),
        ({"CIRCLECI": "true", "CIRCLE_NODE_INDEX": "2"}, "3"),
        ({"APPVEYOR": "True", "APPVEYOR_JOB_NUMBER": "4"}, "4"),
        # a total that cannot hold the position is dropped
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "4"}, "5"),
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "many"}, "2"),
        # no position: the job's name
        ({"GITLAB_CI": "true", "CI_JOB_NAME": "pytest 2/4", "CI_NODE_TOTAL": "1"}, "pytest 2/4"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_JOB": "tests"}, "tests"),
        ({"JENKINS_URL": "https://ci/", "STAGE_NAME": "Unit"}, "Unit"),
        ({"TRAVIS": "true", "TRAVIS_JOB_NAME": "", "TRAVIS_JOB_NUMBER": "9.3"}, "9.3"),
        # a position that is not one falls back to the name
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "x", "CI_JOB_NAME": "unit"}, "unit"),
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "0", "CI_JOB_NAME": "unit"}, "unit"),
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "-1", "CI_JOB_NAME": "unit"}, "unit"),
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "", "CI_JOB_NAME": "unit"}, "unit"),
        # nothing at all
        ({"GITLAB_CI": "true", "CI_PIPELINE_ID": "7"}, None),
        ({"GITLAB_CI": "true", "CI_NODE_INDEX": "x"}, None),
        ({"BITBUCKET_BUILD_NUMBER": "3"}, None),
        ({"CODEBUILD_BUILD_ID": "p:1"}, None),
    ],
)
def test_shard_rules(environ: dict[str, str], shard: str | None) -> None:
    assert ci_run_group(environ)[1] == shard
    info = ci_info(environ)
    assert info is not None
    assert info.get("shard") == shard
    assert "shard" in info or shard is None


@pytest.mark.parametrize(
    ("environ", "group"),
    [
        ({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "11", "GITHUB_RUN_ATTEMPT": "3"}, "11-3"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "11"}, "11"),  # no attempt
        ({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ATTEMPT": "3"}, None),  # no run id
        ({"GITLAB_CI": "true", "CI_PIPELINE_ID": "7", "CI_JOB_ID": "70"}, "7"),
        ({"BUILDKITE": "true", "BUILDKITE_BUILD_ID": "b", "BUILDKITE_JOB_ID": "j"}, "b"),
        ({"CIRCLECI": "true", "CIRCLE_WORKFLOW_ID": "w", "CIRCLE_BUILD_NUM": "9"}, "w"),
        ({"TF_BUILD": "True", "BUILD_BUILDID": "5", "SYSTEM_JOBID": "j"}, "5"),
        # Bitbucket without its pipeline UUID: the repository's build number
        ({"BITBUCKET_BUILD_NUMBER": "3", "BITBUCKET_REPO_FULL_NAME": "a/b"}, "a/b#3"),
        # TeamCity without BUILD_URL (older servers)
        (
            {"TEAMCITY_VERSION": "2021.2", "TEAMCITY_PROJECT_NAME": "App"}
            | {"TEAMCITY_BUILDCONF_NAME": "Tests", "BUILD_NUMBER": "88"},
            "App/Tests#88",
        ),
        # CodeBuild: the initiator names a batch only inside one
        (
            {"CODEBUILD_BUILD_ID": "p:1", "CODEBUILD_INITIATOR": "codepipeline/deploy"},
            "p:1",
        ),
        (
            {"CODEBUILD_BUILD_ID": "p:1", "CODEBUILD_INITIATOR": "p/AWSCodeBuild-9"}
            | {"CODEBUILD_BATCH_BUILD_IDENTIFIER": "build1"},
            "p/AWSCodeBuild-9",
        ),
        # Bitrise outside a pipeline: the build
        ({"BITRISE_IO": "true", "BITRISE_BUILD_SLUG": "s1"}, "s1"),
        # Semaphore: the pipeline, not the workflow that also holds promoted pipelines
        ({"SEMAPHORE": "true", "SEMAPHORE_WORKFLOW_ID": "w", "SEMAPHORE_PIPELINE_ID": "p"}, "p"),
    ],
)
def test_group_rules(environ: dict[str, str], group: str | None) -> None:
    assert ci_run_group(environ)[0] == group
    info = ci_info(environ)
    assert info is not None
    assert info.get("group") == group


def test_group_and_shard_are_redacted_and_capped() -> None:
    environ = {
        "TEAMCITY_VERSION": "2025.07",
        "BUILD_URL": "https://bot:hunter2@tc.example.com/build/1",
        "TEAMCITY_BUILDCONF_NAME": "x" * 5000,
    }
    group, shard = ci_run_group(environ)
    assert group == "https://***@tc.example.com/build/1"
    assert shard == "x" * MAX_VALUE_LENGTH
    info = ci_info(environ)
    assert info is not None
    assert (info["group"], info["shard"]) == (group, shard)


def test_codebuild_branch_and_pull_request_from_webhook() -> None:
    push = ci_info(
        {
            "CODEBUILD_BUILD_ID": "p:1",
            "CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/release/2.0",
            "CODEBUILD_WEBHOOK_TRIGGER": "branch/release/2.0",
        }
    )
    assert push == {
        "provider": "aws-codebuild",
        "run_id": "p:1",
        "branch": "release/2.0",
        "group": "p:1",
    }


# -- telling providers apart ---------------------------------------------------------------


def test_gitlab_is_not_woodpecker() -> None:
    gitlab = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PIPELINE_ID": "1001",
        "CI_PIPELINE_URL": "https://gitlab.com/acme/app/-/pipelines/1001",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_BRANCH": "main",
        "CI_COMMIT_REF_NAME": "main",
        "CI_JOB_NAME": "pytest",
        "CI_JOB_ID": "2002",
    }
    info = ci_info(gitlab)
    assert info is not None
    assert info["provider"] == "gitlab-ci"
    assert ci_run_group(gitlab) == ("1001", "pytest")


def test_woodpecker_is_not_gitlab() -> None:
    # A Woodpecker server whose forge is GitLab: GitLab-like CI_* names, no GITLAB_CI.
    woodpecker = {
        "CI": "woodpecker",
        "CI_FORGE_TYPE": "gitlab",
        "CI_FORGE_URL": "https://gitlab.com",
        "CI_REPO": "acme/app",
        "CI_PIPELINE_NUMBER": "8",
        "CI_PIPELINE_URL": "https://ci.example.com/repos/7/pipeline/8",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_BRANCH": "main",
        "CI_WORKFLOW_NAME": "test",
        # names GitLab sets that Woodpecker does not: never read for Woodpecker
        "CI_PIPELINE_ID": "999",
        "CI_JOB_ID": "998",
    }
    info = ci_info(woodpecker)
    assert info is not None
    assert info["provider"] == "woodpecker"
    assert info["run_id"] == "8"
    assert "job_id" not in info
    assert ci_run_group(woodpecker) == ("acme/app#8", "test")


def test_woodpecker_is_not_drone() -> None:
    # Woodpecker copies its values to Drone's names for Drone plugins (not DRONE=true).
    woodpecker = {
        "CI": "woodpecker",
        "CI_REPO": "acme/app",
        "CI_PIPELINE_NUMBER": "8",
        "CI_WORKFLOW_NAME": "test",
        "DRONE_REPO": "acme/app",
        "DRONE_BUILD_NUMBER": "8",
        "DRONE_COMMIT_SHA": SHA,
        "DRONE_BRANCH": "main",
    }
    info = ci_info(woodpecker)
    assert info is not None
    assert info["provider"] == "woodpecker"
    drone = {
        "CI": "true",
        "DRONE": "true",
        "DRONE_REPO": "acme/app",
        "DRONE_BUILD_NUMBER": "8",
        "DRONE_STAGE_NAME": "test",
    }
    info = ci_info(drone)
    assert info is not None
    assert info["provider"] == "drone"
    # Drone before 1.0 set CI=drone, with DRONE=true too.
    info = ci_info({**drone, "CI": "drone"})
    assert info is not None
    assert info["provider"] == "drone"


@pytest.mark.parametrize(
    ("environ", "provider"),
    [
        # Jenkins: BUILD_ID is its build number
        (
            {"JENKINS_URL": "https://ci/", "BUILD_ID": "15", "BUILD_NUMBER": "15"}
            | {"BUILD_TAG": "jenkins-app-15"},
            "jenkins",
        ),
        # even with the names Cloud Build's steps commonly receive
        (
            {"JENKINS_URL": "https://ci/", "BUILD_ID": UUID, "BUILD_NUMBER": "15"}
            | {"PROJECT_ID": "acme"},
            "jenkins",
        ),
        ({"TEAMCITY_VERSION": "2025.07", "BUILD_NUMBER": "1.4.211"}, "teamcity"),
        (
            {"TEAMCITY_VERSION": "2025.07", "BUILD_NUMBER": "7", "BUILD_ID": UUID}
            | {"PROJECT_ID": "acme"},
            "teamcity",
        ),
        ({"BUILD_ID": UUID, "PROJECT_ID": "acme", "BUILD_NUMBER": "3"}, "google-cloud-build"),
        # the names alone are no provider
        ({"BUILD_ID": "15", "BUILD_NUMBER": "15"}, None),
        ({"BUILD_ID": UUID}, None),  # no PROJECT_ID
        ({"BUILD_ID": "15", "PROJECT_ID": "acme"}, None),  # not Cloud Build's id form
        ({"BUILD_NUMBER": "15", "CI": "true"}, "unknown"),
        ({"BUILD_ID": "15", "PROJECT_ID": "acme", "CI": "true"}, "unknown"),
    ],
)
def test_shared_build_names_are_told_apart(environ: dict[str, str], provider: str | None) -> None:
    info = ci_info(environ)
    assert (info or {}).get("provider") == provider


def test_jenkins_teamcity_and_cloud_build_groups_differ() -> None:
    jenkins = {"JENKINS_URL": "https://ci/", "BUILD_ID": "15", "BUILD_TAG": "jenkins-app-15"}
    teamcity = {"TEAMCITY_VERSION": "2025.07", "BUILD_URL": "https://tc/build/15"}
    cloud_build = {"BUILD_ID": UUID, "PROJECT_ID": "acme"}
    assert ci_run_group(jenkins)[0] == "jenkins-app-15"
    assert ci_run_group(teamcity)[0] == "https://tc/build/15"
    assert ci_run_group(cloud_build)[0] == UUID


# The smallest environment detecting each provider, in the documented order of detection.
DETECTION_ORDER = [
    ("github-actions", {"GITHUB_ACTIONS": "true"}),
    ("gitlab-ci", {"GITLAB_CI": "true"}),
    ("jenkins", {"JENKINS_URL": "https://ci/"}),
    ("circleci", {"CIRCLECI": "true"}),
    ("buildkite", {"BUILDKITE": "true"}),
    ("azure-pipelines", {"TF_BUILD": "True"}),
    ("travis-ci", {"TRAVIS": "true"}),
    ("bitbucket-pipelines", {"BITBUCKET_BUILD_NUMBER": "4"}),
    ("teamcity", {"TEAMCITY_VERSION": "2025.07"}),
    ("appveyor", {"APPVEYOR": "True"}),
    ("woodpecker", {"CI": "woodpecker"}),
    ("drone", {"DRONE": "true"}),
    ("aws-codebuild", {"CODEBUILD_BUILD_ID": "p:1"}),
    ("bitrise", {"BITRISE_IO": "true"}),
    ("semaphore", {"SEMAPHORE": "true"}),
    ("codefresh", {"CF_BUILD_ID": "65f1"}),
    ("google-cloud-build", {"BUILD_ID": UUID, "PROJECT_ID": "acme"}),
]


@pytest.mark.parametrize(("provider", "environ"), DETECTION_ORDER)
def test_each_provider_detected_alone(provider: str, environ: dict[str, str]) -> None:
    info = ci_info(environ)
    assert info is not None
    assert info["provider"] == provider


def test_detection_order_is_deterministic() -> None:
    # When two providers' variables are both present the earlier one in the table wins,
    # whatever order the environment lists them in.
    for (first, first_env), (second, second_env) in itertools.combinations(DETECTION_ORDER, 2):
        for environ in ({**first_env, **second_env}, {**second_env, **first_env}):
            info = ci_info(environ)
            assert info is not None
            assert info["provider"] == first, (first, second, list(environ))


@pytest.mark.parametrize(
    "environ",
    [
        {"CI": "true"},
        {"CI": "1"},
        {"CI": "yes", "CI_COMMIT_SHA": SHA, "CI_PIPELINE_NUMBER": "3"},  # no CI=woodpecker
        {"CI": "true", "DRONE_BUILD_NUMBER": "8"},  # Drone's names without DRONE=true
    ],
)
def test_bare_ci_is_unknown_without_group(environ: dict[str, str]) -> None:
    assert ci_info(environ) == {"provider": "unknown"}
    assert ci_run_group(environ) == (None, None)


@pytest.mark.parametrize("environ", [{}, {"CI": "false"}, {"PATH": "/usr/bin"}])
def test_outside_ci_no_group(environ: dict[str, str]) -> None:
    assert ci_info(environ) is None
    assert ci_run_group(environ) == (None, None)


def test_ci_run_group_reads_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ci_run_group must not start processes or open files")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(os, "stat", forbidden)
    environ = {"GITLAB_CI": "true", "CI_PIPELINE_ID": "7", "CI_NODE_INDEX": "2"}
    environ |= {"CI_NODE_TOTAL": "3"}
    assert ci_run_group(environ) == ("7", "2/3")
