"""The README's CI recipes, run locally: each recipe's `pytest` and `stepflow` lines, in order,
with the variables the CI service would set, on a sample project of eight test files.

The commands come from the README itself (section "CI recipes"), so a recipe that stops
working fails here: four shard jobs (each in a checkout of its own, under pytest-xdist), the
artifacts moved as the CI service would move them, then the results job (merge, summary, show).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
SHARDS = 4
FILES = 8
TESTS_PER_FILE = 3
FAILING = "tests/test_f.py::test_case_2"


@dataclass
class Job:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def recipes() -> list[str]:
    """The YAML blocks of the README's "CI recipes" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### CI recipes") :]
    section = section[: section.index("\n## ")]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)


def jobs(block: str) -> list[Job]:
    """The jobs of one recipe with their `env:` entries and their `pytest`/`stepflow` lines.

    A tiny reader of the recipes' own shape (two-space YAML, a job per key under `jobs:` or
    at the top level), not a YAML parser: it only needs to find what a job runs.
    """
    found: list[Job] = []
    job: Job | None = None
    job_indent = 2 if "\njobs:\n" in "\n" + block else 0
    in_env = False
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        content = line.strip()
        if indent == job_indent and content.endswith(":") and " " not in content:
            if content[:-1] not in ("jobs", "stages"):
                job = Job(content[:-1])
                found.append(job)
            continue
        if job is None:
            continue
        if content == "env:" and indent == job_indent + 2:
            in_env = True
            continue
        if in_env and indent > job_indent + 2 and ":" in content and not content.startswith("-"):
            key, _, value = content.partition(":")
            job.env[key.strip()] = value.strip()
            continue
        in_env = False
        command = re.sub(r"^-\s+(run:\s+)?", "", content)
        if re.match(r"(pytest|stepflow)\s", command):
            job.commands.append(command)
    return found


def sample_project(root: Path) -> None:
    """Eight test files of three tests; one test fails, one attaches an artifact."""
    tests = root / "tests"
    tests.mkdir(parents=True)
    for index, letter in enumerate("abcdefgh"[:FILES]):
        body = ["from pytest_stepflow import attach" if letter == "a" else ""]
        for case in range(TESTS_PER_FILE):
            body.append(f"def test_case_{case}(tmp_path):")
            if f"tests/test_{letter}.py::test_case_{case}" == FAILING:
                body.append("    assert 'shard' == 'whole'")
            elif letter == "a" and case == 0:
                body.append("    attach(b'proof', name='proof.txt')")
            else:
                body.append(f"    assert {index} + {case} >= 0")
        (tests / f"test_{letter}.py").write_text("\n".join(body) + "\n", encoding="utf-8")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def expand(command: str, shard: int | None, secrets: dict[str, str]) -> str:
    if shard is not None:
        command = command.replace("${{ matrix.shard }}", str(shard))
    for name, value in secrets.items():
        command = command.replace("${{ secrets." + name + " }}", value)
    assert "${{" not in command, f"an expression the test does not provide: {command}"
    return command


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def base_environment(ci: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    return {**env, **ci}


def job_environment(
    job: Job, base: dict[str, str], shard: int | None, secrets: dict[str, str]
) -> dict[str, str]:
    return {**base, **{k: expand(v, shard, secrets) for k, v in job.env.items()}}


def check_results(show: subprocess.CompletedProcess[str], summary: str | None) -> None:
    """The pipeline as one run: four shards, every test once, the one failure named."""
    assert show.returncode == 1, show.stdout + show.stderr  # --fail-on=failures
    assert "run group" in show.stdout
    assert FAILING in show.stdout
    for shard in range(1, SHARDS + 1):
        assert f"{shard}/{SHARDS}" in show.stdout
    total = FILES * TESTS_PER_FILE
    assert f"{total - 1} passed" in show.stdout and "1 failed" in show.stdout, show.stdout
    if summary is not None:
        # Markdown escapes the node id's underscores.
        assert FAILING.replace("_", "\\_") in summary and "1 failed" in summary, summary
        assert "over 4 shards" in summary, summary


@pytest.fixture
def recipe_blocks() -> list[str]:
    blocks = recipes()
    assert len(blocks) == 3, "the README's CI recipes: GitHub artifacts, GitHub server, GitLab"
    return blocks


def test_github_actions_with_artifacts(recipe_blocks: list[str], tmp_path: Path) -> None:
    test_job, results_job = jobs(recipe_blocks[0])
    assert [c.split()[0] for c in test_job.commands] == ["pytest"]
    assert [c.split()[:2] for c in results_job.commands] == [
        ["stepflow", "merge"],
        ["stepflow", "summary"],
        ["stepflow", "show"],
    ]
    ci = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "900100", "GITHUB_JOB": "test"}
    base = base_environment({**ci, "GITHUB_RUN_ATTEMPT": "1"})
    results = tmp_path / "results"
    for shard in range(1, SHARDS + 1):
        checkout = tmp_path / f"job-{shard}"
        sample_project(checkout)
        env = job_environment(test_job, base, shard, {})
        (command,) = test_job.commands
        done = run(expand(command, shard, {}), checkout, env)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert "run group 900100-1" in done.stdout
        # actions/upload-artifact, then download-artifact with `pattern` and `path: shards`
        shutil.copytree(checkout / "stepflow-shard", results / "shards" / f"stepflow-shard-{shard}")
    summary_file = tmp_path / "step-summary.md"
    env = {**job_environment(results_job, base, None, {}), "GITHUB_STEP_SUMMARY": str(summary_file)}
    merge, summary, show = (run(expand(c, None, {}), results, env) for c in results_job.commands)
    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert summary.returncode == 0, summary.stdout + summary.stderr
    check_results(show, summary_file.read_text(encoding="utf-8"))


def test_github_actions_with_a_postgresql_server(
    recipe_blocks: list[str], tmp_path: Path, postgres_url: str
) -> None:
    test_job, results_job = jobs(recipe_blocks[1])
    secrets = {"STEPFLOW_DB": postgres_url}
    ci = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "900200", "GITHUB_JOB": "test"}
    base = base_environment({**ci, "GITHUB_RUN_ATTEMPT": "2"})
    for shard in range(1, SHARDS + 1):
        checkout = tmp_path / f"job-{shard}"
        sample_project(checkout)
        env = job_environment(test_job, base, shard, secrets)
        (command,) = test_job.commands
        done = run(expand(command, shard, secrets), checkout, env)
        assert done.returncode in (0, 1), done.stdout + done.stderr
    summary_file = tmp_path / "step-summary.md"
    env = {
        **job_environment(results_job, base, None, secrets),
        "GITHUB_STEP_SUMMARY": str(summary_file),
    }
    empty = tmp_path / "results"
    empty.mkdir()
    summary, show = (run(expand(c, None, secrets), empty, env) for c in results_job.commands)
    assert summary.returncode == 0, summary.stdout + summary.stderr
    check_results(show, summary_file.read_text(encoding="utf-8"))
    assert "900200-2" in show.stdout


def test_gitlab_parallel_with_artifacts(recipe_blocks: list[str], tmp_path: Path) -> None:
    test_job, results_job = jobs(recipe_blocks[2])
    results = tmp_path / "results"
    results.mkdir()
    ci = {"CI": "true", "GITLAB_CI": "true", "CI_PIPELINE_ID": "4455", "CI_JOB_NAME": "test"}
    for shard in range(1, SHARDS + 1):
        checkout = tmp_path / f"job-{shard}"
        sample_project(checkout)
        node = {"CI_NODE_INDEX": str(shard), "CI_NODE_TOTAL": str(SHARDS)}
        env = job_environment(test_job, base_environment({**ci, **node}), shard, {})
        (command,) = test_job.commands
        done = run(expand(command, shard, {}), checkout, env)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert f"run group 4455, shard {shard}/{SHARDS}" in done.stdout
        # GitLab restores each job's `artifacts: paths` into the later stage's checkout.
        shutil.copytree(checkout / f"stepflow-{shard}", results / f"stepflow-{shard}")
    env = job_environment(results_job, base_environment(ci), None, {})
    merge, show = (run(expand(c, None, {}), results, env) for c in results_job.commands)
    assert merge.returncode == 0, merge.stdout + merge.stderr
    check_results(show, None)
    # Merging the same files again adds nothing: the pipeline still counts every test once.
    again = run(expand(results_job.commands[0], None, {}), results, env)
    assert again.returncode == 0, again.stdout + again.stderr
    check_results(run(expand(results_job.commands[1], None, {}), results, env), None)
