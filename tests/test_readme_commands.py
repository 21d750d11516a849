"""The README's command reference cannot drift from the `stepflow` parser.

Each command has a `#### \\`stepflow NAME\\`` section; every option of the command (and of its
actions, for `quarantine`) is named in it; every long option the reference names exists (on a
`stepflow` command, or on pytest with the plugins this project installs); and every
`stepflow ...` line of the README's examples parses as the command line it shows.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_stepflow.cli import build_parser

README = Path(__file__).parent.parent / "README.md"
# Documented once, for every command, under "Shared options".
SHARED = {"--db", "--json", "--no-color", "-h", "--help"}
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")
SECTION = re.compile(r"#### `stepflow ([a-z-]+)`")


def _lines_outside_fences(text: str) -> Iterator[tuple[bool, str]]:
    """Each line with whether it is inside a ``` block (a `# ...` line there is no heading)."""
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            yield True, line
            continue
        yield fenced, line


def command_sections() -> dict[str, str]:
    """`stepflow NAME` -> the text of its section, up to the next heading of any level."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for fenced, line in _lines_outside_fences(README.read_text(encoding="utf-8")):
        if not fenced and re.match(r"#{1,6} ", line):
            heading = SECTION.fullmatch(line)
            current = sections.setdefault(heading.group(1), []) if heading else None
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_groups(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Each option of a command and of its actions, as its spellings (`-o`, `--output`)."""
    groups = [
        tuple(action.option_strings)
        for action in parser._actions
        if action.option_strings and not SHARED.intersection(action.option_strings)
    ]
    for action_parser in sub_parsers(parser).values():
        groups.extend(g for g in option_groups(action_parser) if g not in groups)
    return groups


# `__complete` is hidden: the completion scripts' own (cli/completion/).
COMMANDS = {n: p for n, p in sub_parsers(build_parser()).items() if not n.startswith("__")}


def test_every_command_has_a_section_and_every_section_a_command() -> None:
    sections = command_sections()
    assert sorted(sections) == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_its_section(name: str) -> None:
    named = set(OPTION.findall(command_sections()[name]))
    missing = [
        "/".join(spellings)
        for spellings in option_groups(COMMANDS[name])
        if not named.intersection(spellings)
    ]
    assert missing == [], f"README's `stepflow {name}` section does not name {missing}"


def pytest_options() -> set[str]:
    """The long options pytest's help lists, with this project's plugins (xdist, stepflow...)."""
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:randomly"],
        capture_output=True,
        text=True,
        check=True,
        cwd=README.parent,
    ).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", shown))


def pytest_takes(option: str, where: Path) -> bool:
    """Whether pytest's parser knows `option`, help or not (`--junitxml` is an alias its
    help leaves out): any complaint but "unrecognized arguments" means it does."""
    complaint = subprocess.run(
        [sys.executable, "-m", "pytest", option, "--co", "-q", "-p", "no:randomly"],
        capture_output=True,
        text=True,
        check=False,
        cwd=where,
    ).stderr
    return "unrecognized arguments" not in complaint


def test_every_option_the_reference_names_exists(tmp_path: Path) -> None:
    known = set(SHARED)
    for parser in COMMANDS.values():
        known.update(s for spellings in option_groups(parser) for s in spellings)
    known |= pytest_options()
    reference = "\n".join(command_sections().values())
    candidates = {o for o in OPTION.findall(reference) if o.startswith("--")} - known
    unknown = sorted(o for o in candidates if not pytest_takes(o, tmp_path))
    assert unknown == [], f"README's command reference names options that do not exist: {unknown}"


def example_command_lines() -> list[str]:
    """Each `stepflow ...` command of the README's ```bash blocks and (after `$ `) its
    ```console blocks, continuation lines joined; other blocks show output."""
    lines: list[str] = []
    language, pending = "", ""
    for fenced, line in _lines_outside_fences(README.read_text(encoding="utf-8")):
        if line.startswith("```"):
            language, pending = line[3:].strip(), ""
            continue
        if not fenced or language not in ("bash", "console"):
            continue
        text = pending + line.strip()
        pending = ""
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        if language == "console":
            if not text.startswith("$ "):
                continue
            text = text[2:]
        if text.startswith("stepflow "):
            lines.append(text)
    return lines


EXAMPLES = example_command_lines()


def test_the_readme_has_examples_of_most_commands() -> None:
    """The parse test below is only worth something while the examples are found."""
    shown = {shlex.split(line, comments=True)[1] for line in EXAMPLES}
    assert len(shown) >= len(COMMANDS) * 3 // 4, sorted(set(COMMANDS) - shown)


@pytest.mark.parametrize("line", EXAMPLES)
def test_every_example_parses(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(line, comments=True)
    # The command ends where the shell takes over: `| jq ...`, `> file`, `&& ...`.
    end = next((i for i, w in enumerate(words) if w[0] in "|>&;" or w == "2>"), len(words))
    words = words[:end]
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"README example does not parse: {line}\n{capsys.readouterr().err}")
