"""What a shell needs to know to complete `stepflow`, read from its argparse parser.

Walking the parser itself (sub-commands, nested ones such as `quarantine add`, options,
whether an option takes a value, its choices) means a new command or option is completed
without touching the completion code. What a value is (a file, a run, a node id) is read
from the argument's metavar (or dest) and type by the rules of `value_kind`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

# The kinds of value an option or positional takes: a shell completes each its own way.
FILES = "files"  # paths on disk (the shell's own file completion)
RUNS = "runs"  # run references, read from the database (`stepflow __complete runs`)
NODEIDS = "nodeids"  # node ids, read from the database (`stepflow __complete nodeids`)
ANY = "any"  # free text: nothing to offer
CHOICE = "choice:"  # followed by the choices, separated by spaces

# Metavars (or dests) that name a path on disk: `--db=PATH`, `-o FILE`, merge's SOURCE and
# --into=TARGET (a file, or a URL the shell cannot offer).
PATH_NAMES = frozenset({"PATH", "FILE", "DIR", "SOURCE", "TARGET"})
# A choice goes into shell code unquoted: plain words only (argparse's are).
_PLAIN = re.compile(r"[A-Za-z0-9_.+/-]+")
_ASIDE = re.compile(r"\s*\([^()]*\)")  # a parenthesis, left out of one-line help


@dataclasses.dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # ('-o', '--output')
    kind: str | None  # None: a flag that takes no value
    help: str


@dataclasses.dataclass(frozen=True)
class Command:
    """One command (or the top level, path ()): its sub-commands, options, positionals."""

    path: tuple[str, ...]  # ('quarantine', 'add')
    help: str
    options: tuple[Option, ...]
    positionals: tuple[str, ...]  # the kind of each positional, in order
    repeats: bool  # the last positional takes any number of values
    commands: tuple[Command, ...]

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def walk(self) -> list[Command]:
        """This command and every command under it, parents first."""
        found = [self]
        for child in self.commands:
            found.extend(child.walk())
        return found


def read_parser(parser: argparse.ArgumentParser) -> Command:
    return _command(parser, (), "")


def _command(parser: argparse.ArgumentParser, path: tuple[str, ...], help: str) -> Command:
    options: list[Option] = []
    positionals: list[str] = []
    repeats = False
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # Only the listed commands: one added without help= (`__complete`) stays hidden.
            for listed in action._choices_actions:
                name = listed.dest
                commands.append(
                    _command(action.choices[name], (*path, name), _one_line(listed.help))
                )
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            kind = None if action.nargs == 0 else value_kind(action)
            options.append(Option(tuple(action.option_strings), kind, _one_line(action.help)))
        else:
            positionals.append(value_kind(action))
            repeats = action.nargs in ("+", "*", argparse.REMAINDER)
    return Command(path, help, tuple(options), tuple(positionals), repeats, tuple(commands))


def value_kind(action: argparse.Action) -> str:
    """How a value of `action` is completed: its choices, else by what its metavar (or
    dest) says it is."""
    if action.choices is not None:
        choices = [str(c) for c in action.choices]
        if all(_PLAIN.fullmatch(c) for c in choices):
            return CHOICE + " ".join(choices)
        return ANY
    name = str(action.metavar or action.dest).upper()
    if name in PATH_NAMES:
        return FILES
    if name == "RUN" or name.startswith("RUN_"):
        return RUNS
    if name == "NODEID":
        return NODEIDS
    return ANY


def _one_line(text: str | None) -> str:
    """A help text as a shell shows it beside a candidate: its first sentence, one line."""
    if not text or text == argparse.SUPPRESS:
        return ""
    words = " ".join(_ASIDE.sub("", text.replace("%%", "%")).split())
    return re.split(r"[.;:] ", words)[0].rstrip(".:")
