"""`stepflow completion bash|zsh|fish`: a completion script for that shell.

The scripts are generated from `stepflow`'s own parser (spec.py), so that every command and
option is completed without a change here; runs and node ids come from the database through
the hidden `stepflow __complete` (candidates.py).
"""

from __future__ import annotations

import argparse

from pytest_stepflow.cli.common import OK, Output
from pytest_stepflow.cli.completion import bash, candidates, fish, zsh
from pytest_stepflow.cli.completion.spec import read_parser

SHELLS = {"bash": bash.script, "zsh": zsh.script, "fish": fish.script}

SUMMARY = "print a completion script for bash, zsh or fish"
INSTALL = """\
examples:
  stepflow completion bash > ~/.local/share/bash-completion/completions/stepflow
  stepflow completion zsh > "${fpath[1]}/_stepflow"
  stepflow completion fish > ~/.config/fish/completions/stepflow.fish
  eval "$(stepflow completion bash)"     in ~/.bashrc, instead of the file
  source <(stepflow completion zsh)      in ~/.zshrc after compinit, instead of the file

Install once, then start a new shell. Runs and node ids are offered from the database
(--db on the line, else $STEPFLOW_DB, else the nearest .stepflow/stepflow.db); file names
for --db, -o/--output, --file, --into.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "completion",
        help=SUMMARY,
        description=SUMMARY,
        epilog=INSTALL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=tuple(SHELLS), help="the shell to complete for")
    parser.set_defaults(handler=_print_script)

    # No help=: argparse then lists it nowhere. Its own names (`database`) so that the
    # shared options' checks (common.shared_options) never reject or parse a value.
    hidden = sub.add_parser("__complete", add_help=False)
    hidden.add_argument("kind")
    hidden.add_argument("--db", dest="database", default=None)
    # The prefix as an option: argparse gives an optional positional after --db nothing.
    hidden.add_argument("--prefix", default="")
    hidden.set_defaults(handler=candidates.handle)


def _print_script(args: argparse.Namespace, out: Output) -> int:
    from pytest_stepflow.cli import build_parser  # the whole parser; cli imports this module

    out.stream.write(SHELLS[args.shell](read_parser(build_parser())))
    return OK
