"""Every `stepflow COMMAND --json` output (and `export --format=json|jsonl`) validates
against its JSON Schema in `pytest_stepflow/schemas/`, the documented contract.

The history (recorded once by real pytest runs, on SQLite): runs #1 and #2 of one suite on one
git commit (a failure, an error in setup, a skip, an xfail, a test that flips between runs,
a test that passes on its rerun, a log record, printed output, a sub-step, a property, an
artifact), then run group `pipe-1`: shards 1/2 (#3) and 2/2 (#4, a failure). The commands
that write run on a copy that `stepflow merge` makes; the server's own variants of the
maintenance commands on a PostgreSQL schema that `stepflow merge` fills (skipped without a
server).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import new_store, project_environment
from jsonschema import Draft202012Validator, FormatChecker, ValidationError

import pytest_stepflow
from pytest_stepflow.cli import build_parser, main

SCHEMAS = Path(pytest_stepflow.__file__).parent / "schemas"
SUFFIX = ".schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Objects whose keys are open by design: hooks add metadata of their own; the writer's
# statistics are `{}` until a run ends, and older runs lack the newer keys.
OPEN_KEYS = {"metadata"}
OPTIONAL_KEYS = {"metadata", "writerStats"}

SUITE = {
    "test_shop.py": """
import logging
import os

import pytest

from pytest_stepflow import attach, step

RUN = int(os.environ["SF_RUN"])
TRIES = []


def test_checkout(record_property):
    record_property("owner", "team-cart")
    with step("log in", user="bob"):
        logging.getLogger("shop.cart").warning("slow cart for %s", "bob")
    print("receipt printed")
    attach(b"\\x89PNG fake", name="page.png")


def test_flip():
    assert RUN % 2 == 0, "odd run"


def test_rerun():
    TRIES.append(1)
    assert len(TRIES) > 1, "first try fails"


@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")


def test_error(broken):
    pass


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False
""",
    "test_shard.py": """
import os


def test_shard_a():
    pass


def test_shard_b():
    assert os.environ["SF_SHARD"] != "2", "fails in shard 2"
""",
}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's database: .stepflow/stepflow.db under its folder."""
    root = tmp_path_factory.mktemp("schemas")
    for name, text in SUITE.items():
        (root / name).write_text(text)
    env = project_environment(root)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "c"], cwd=root, env=env)

    def pytest_run(run: int, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--stepflow", *args],
            cwd=root,
            env={**env, "SF_RUN": str(run), "SF_SHARD": str(run - 2)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1 or (run == 3 and result.returncode == 0), (
            result.stdout + result.stderr
        )

    for run in (1, 2):
        pytest_run(run, "--reruns=1", f"--stepflow-name=run-{run}", "test_shop.py")
    for shard in (1, 2):
        group = ("--stepflow-run-group=pipe-1", f"--stepflow-shard={shard}/2")
        pytest_run(2 + shard, *group, "test_shard.py")
    return root / ".stepflow" / "stepflow.db"


def stepflow(db: Path | str | None, *args: str) -> tuple[int, str, str]:
    """`stepflow ARGS --db=DB` (no --db when None) in this process: exit status, stdout,
    stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, f"--db={db}"] if db is not None else list(args))
    return code, out.getvalue(), err.getvalue()


def as_json(db: Path | str | None, *args: str, status: int = 0) -> Any:
    code, out, err = stepflow(db, *args, "--json")
    assert code == status, err
    return json.loads(out)


@cache
def schema(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((SCHEMAS / f"{name}{SUFFIX}").read_text("utf-8"))
    return value


def validate(name: str, value: Any) -> None:
    """Valid against the schema `name`, with every error listed where it is."""
    validator = Draft202012Validator(schema(name), format_checker=FormatChecker())
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}"
        for top in validator.iter_errors(value)
        for e in leaves(top)
    ]
    assert not errors, f"{name}:\n" + "\n".join(errors)


def leaves(error: ValidationError) -> list[ValidationError]:
    """The errors under a oneOf/anyOf's: what each branch found, not the whole instance."""
    if not error.context:
        return [error]
    return [leaf for sub in error.context for leaf in leaves(sub)]


def check_strict(name: str, value: Any) -> None:
    """The schema catches a key renamed, removed or added in the output's first object."""
    first = value[0] if isinstance(value, list) else value
    assert isinstance(first, dict) and first, f"{name}: nothing to check the schema against"
    validator = Draft202012Validator(schema(name), format_checker=FormatChecker())
    key = next(iter(first))
    removed, renamed, added = (copy.deepcopy(first) for _ in range(3))
    del removed[key]
    renamed[key + "_renamed"] = renamed.pop(key)
    added["unheard_of"] = 1
    for changed in (removed, renamed, added):
        wrapped = [changed] if isinstance(value, list) else changed
        assert not validator.is_valid(wrapped), f"{name} accepts {sorted(changed)}"


def check(name: str, value: Any) -> None:
    validate(name, value)
    check_strict(name, value)


# -- the query commands, each variant -------------------------------------------------------

QUERIES = [
    ("runs", ("runs",)),
    ("runs", ("runs", "--groups")),
    ("show", ("show", "1")),
    ("show", ("show", "group:latest")),
    ("steps", ("steps", "1")),
    ("steps", ("steps", "group:latest")),
    ("slowest", ("slowest", "1")),
    ("slowest", ("slowest", "group:latest")),
    ("slowest", ("slowest", "--last", "3")),
    ("flaky", ("flaky", "--min-flips", "2")),
    ("history", ("history", "test_shop.py::test_flip")),
    ("diff", ("diff", "1", "2")),
    ("diff", ("diff", "2", "group:latest")),
    ("logs", ("logs", "test_shop.py::test_checkout", "1")),
    ("logs", ("logs", "test_shard.py::test_shard_b", "group:latest")),
    ("search", ("search", "receipt")),
    ("artifacts", ("artifacts", "1")),
    ("artifacts", ("artifacts", "group:latest~1")),
    ("durations", ("durations",)),
    ("durations", ("durations", "--format=json")),
    ("stats", ("stats",)),
    ("doctor", ("doctor",)),
    ("summary", ("summary", "1")),
    ("summary", ("summary", "group:latest")),
    ("quarantine-suggest", ("quarantine", "suggest", "--min-flips", "2")),
]


@pytest.mark.parametrize(("name", "args"), QUERIES, ids=[" ".join(a) for _, a in QUERIES])
def test_query_output_matches_its_schema(history: Path, name: str, args: tuple[str, ...]) -> None:
    # durations --format=json is --json's output without --json
    if "--format=json" in args:
        code, out, err = stepflow(history, *args)
        assert code == 0, err
        value = json.loads(out)
    else:
        value = as_json(history, *args)
    check(name, value)


def test_each_variant_is_the_one_its_title_says(history: Path) -> None:
    """A variant's own branch validates it, not a looser neighbour's."""
    cases = [
        ("runs", ("runs",), "runs"),
        ("runs", ("runs", "--groups"), "run groups"),
        ("show", ("show", "1"), "one run"),
        ("show", ("show", "group:latest"), "one run group"),
        ("summary", ("summary", "1"), "one run"),
        ("summary", ("summary", "group:latest"), "one run group"),
        ("stats", ("stats",), "SQLite file"),
        ("slowest", ("slowest", "1"), "one run"),
    ]
    for name, args, title in cases:
        value = as_json(history, *args)
        doc = schema(name)
        branches = doc.get("oneOf") or doc["anyOf"]
        matching = [
            b["title"]
            for b in branches
            if Draft202012Validator({**b, "$defs": doc.get("$defs", {})}).is_valid(value)
        ]
        assert title in matching, (name, args, matching)


@pytest.mark.parametrize("ref", ["1", "group:latest"])
def test_export_json_and_every_jsonl_line_match_their_schemas(history: Path, ref: str) -> None:
    code, out, err = stepflow(history, "export", ref, "--format=json")
    assert code == 0, err
    check("export-json", json.loads(out))
    code, out, err = stepflow(history, "export", ref, "--format=jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["type"] for line in lines} >= {"run", "step"}
    for line in lines:
        check("export-jsonl", line)


def test_an_error_writes_no_json(history: Path) -> None:
    """With --json an error is one line on stderr and nothing on stdout: a script that
    parses stdout never reads half an answer."""
    for args in (("show", "99"), ("logs", "no_such.py::test", "1"), ("diff", "1", "77")):
        code, out, err = stepflow(history, *args, "--json")
        assert (code, out) == (2, ""), args
        assert len(err.splitlines()) == 1 and err.startswith("stepflow: error: "), err


# -- the commands that write, on a copy -----------------------------------------------------


@pytest.fixture(scope="module")
def copied(history: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the history that `stepflow merge` makes (its output checked too)."""
    target = tmp_path_factory.mktemp("copy") / "stepflow.db"
    merged = as_json(None, "merge", str(history), f"--into={target}")
    assert len(merged["merged"]) == 4
    check("merge", merged)
    return target


def test_merge_again_and_a_refused_source(history: Path, copied: Path) -> None:
    code, out, err = stepflow(
        None,
        "merge",
        str(history),
        str(copied.with_name("missing.db")),
        f"--into={copied}",
        "--json",
    )
    assert code == 1 and "missing.db" in err
    value = json.loads(out)  # the refused source's line went to stderr
    assert len(value["skipped_present"]) == 4 and len(value["refused"]) == 1
    check("merge", value)


def test_quarantine_actions_match_their_schemas(copied: Path, tmp_path: Path) -> None:
    added = as_json(
        copied,
        "quarantine",
        "add",
        "test_shop.py::test_flip",
        "--reason=flips",
        "--issue=https://example.invalid/1",
        "--until-passes=3",
    )
    check("quarantine-add", added)
    typo = as_json(copied, "quarantine", "add", "test_shop.py::nope", "--reason=typo")
    assert typo["recorded"] is False
    check("quarantine-add", typo)
    check("quarantine-rm", as_json(copied, "quarantine", "rm", "test_shop.py::nope"))
    stays = as_json(copied, "quarantine", "ls", "--all")
    assert len(stays) == 2 and {s["left_at"] is None for s in stays} == {True, False}
    check("quarantine-ls", stays)
    check("quarantine-ls", as_json(copied, "quarantine", "ls"))
    file = tmp_path / "quarantine.toml"
    check("quarantine-export", as_json(copied, "quarantine", "export", f"--file={file}"))
    imported = as_json(copied, "quarantine", "import", f"--file={file}")
    assert imported["unchanged"] == ["test_shop.py::test_flip"]
    check("quarantine-import", imported)
    # a flaky test in quarantine now says so
    flaky = as_json(copied, "flaky", "--min-flips", "2")
    assert any(t["quarantined"] for t in flaky["tests"])
    check("flaky", flaky)


def test_maintenance_outputs_match_their_schemas(copied: Path) -> None:
    check("import-spill", as_json(copied, "import-spill"))
    check("optimize", as_json(copied, "optimize"))
    check("optimize", as_json(copied, "optimize", "--vacuum"))
    pruned = as_json(copied, "prune", "--keep=2", "--dry-run")
    assert pruned["runs"] and pruned["dry_run"] is True
    check("prune", pruned)
    check("doctor", as_json(copied, "doctor", "--fix"))
    # A problem: an artifact's content gone from the store (exit status 1).
    for stored in (copied.parent / "artifacts").rglob("*"):
        if stored.is_file():
            stored.unlink()
    unhealthy = as_json(copied, "doctor", status=1)
    assert unhealthy["healthy"] is False
    assert any(c["action"] and c["details"] for c in unhealthy["checks"]), unhealthy
    check("doctor", unhealthy)
    check("prune", as_json(copied, "prune", "--keep=1"))


def test_a_postgresql_schema_has_its_own_variants(
    request: pytest.FixtureRequest, history: Path, tmp_path: Path
) -> None:
    """stats, optimize and prune of a server's schema: their PostgreSQL records."""
    store = new_store(request, "postgresql", tmp_path / "unused.db")
    try:
        url = store.location
        assert len(as_json(None, "merge", str(history), f"--into={url}")["merged"]) == 4
        for name, args in [
            ("stats", ("stats",)),
            ("optimize", ("optimize",)),
            ("prune", ("prune", "--keep=2", "--dry-run")),
            ("doctor", ("doctor",)),
            ("runs", ("runs",)),
            ("show", ("show", "group:latest")),
        ]:
            value = as_json(url, *args)
            if name in ("stats", "optimize", "prune"):
                assert "PostgreSQL" in _branches_matching(name, value), (name, value)
            check(name, value)
    finally:
        store.close()


def _branches_matching(name: str, value: Any) -> str:
    doc = schema(name)
    return " ".join(
        b["title"]
        for b in doc["oneOf"]
        if Draft202012Validator({**b, "$defs": doc.get("$defs", {})}).is_valid(value)
    )


# -- the schemas themselves -----------------------------------------------------------------


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command: its words and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def json_outputs() -> set[str]:
    """The schema names the commands promise: COMMAND[-ACTION] for each --json, and
    COMMAND-FORMAT for a JSON --format of a command without --json (export)."""
    names = set()
    for words, parser in commands(build_parser()):
        if parser.get_default("handler") is None:  # `quarantine`: its actions answer
            continue
        options = parser._option_string_actions
        if "--json" in options:
            names.add("-".join(words))
        elif "--format" in options:
            formats = options["--format"].choices or ()
            names.update("-".join((*words, f)) for f in formats if f.startswith("json"))
    return names


def test_every_json_output_has_a_schema_and_every_schema_an_output() -> None:
    files = {p.name.removesuffix(SUFFIX) for p in SCHEMAS.glob(f"*{SUFFIX}")}
    promised = json_outputs()
    assert {"runs", "quarantine-ls", "export-jsonl", "merge"} <= promised  # the walk works
    assert promised - files == set(), "commands that write JSON without a schema"
    assert files - promised == set(), "schemas of no command"
    assert not [p.name for p in SCHEMAS.iterdir() if not p.name.endswith(SUFFIX)]


def all_schemas() -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in SCHEMAS.glob(f"*{SUFFIX}"))


@pytest.mark.parametrize("name", all_schemas())
def test_each_schema_is_a_documented_strict_2020_12_schema(name: str) -> None:
    doc = schema(name)
    assert doc["$schema"] == DRAFT
    Draft202012Validator.check_schema(doc)
    assert doc["title"] and doc["description"]
    definitions = doc.get("$defs", {})
    problems: list[str] = []

    def described(node: dict[str, Any]) -> bool:
        if node.get("description"):
            return True
        target = node.get("$ref", "")
        return bool(target) and bool(definitions[target.rsplit("/", 1)[1]].get("description"))

    def walk(node: Any, where: str, definition: str | None) -> None:
        if isinstance(node, list):
            for n, item in enumerate(node):
                walk(item, f"{where}/{n}", definition)
            return
        if not isinstance(node, dict):
            return
        properties = node.get("properties")
        if isinstance(properties, dict) and node.get("type") == "object":
            if definition not in OPEN_KEYS and node.get("additionalProperties") is not False:
                problems.append(f"{where}: additionalProperties is not false")
            if definition not in OPTIONAL_KEYS and node.get("required") != list(properties):
                problems.append(f"{where}: required is not every property")
            problems.extend(
                f"{where}/{key}: no description"
                for key, value in properties.items()
                if not described(value)
            )
        for key, value in node.items():
            if key == "$defs":
                for child, sub in value.items():
                    walk(sub, f"$defs/{child}", child)
            elif key != "properties":
                walk(value, f"{where}/{key}", definition if key != "items" else None)
            else:
                for child, sub in value.items():
                    walk(sub, f"{where}/{child}", None)

    walk(doc, "", None)
    assert not problems, "\n".join(problems)


def test_shared_definitions_are_the_same_in_every_file() -> None:
    """Each file stands alone; a definition they share ($defs/run...) reads the same in
    each, so a change to one is made to all."""
    seen: dict[str, tuple[str, Any]] = {}
    for name in all_schemas():
        for key, value in schema(name).get("$defs", {}).items():
            first = seen.setdefault(key, (name, value))
            assert first[1] == value, f"$defs/{key} differs in {first[0]} and {name}"


def test_the_format_checker_checks_times() -> None:
    """`format: date-time` is only checked with rfc3339-validator installed (the test
    extra): without it every time would pass."""
    checker = FormatChecker()
    assert checker.conforms("2026-11-24T09:03:28.123456Z", "date-time")
    assert not checker.conforms("2026-11-24 09:03:28", "date-time")
    assert not checker.conforms("not-a-uuid", "uuid")
