"""The parts of the bash and zsh scripts that are data: `case` functions both shells read.

Each function sets REPLY (no subshell: a completion runs them for every word on the line).
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_stepflow.cli.completion.spec import Command

# The body of bash's and zsh's loop over the words typed before the cursor (both read `w`):
# which command they name, the value an option still wants, and the line's --db (both
# shells' syntax alike; each script's own loop header says where the words come from).
WORD_WALK = r"""        if [[ -n $want ]]; then
            [[ $opt == --db ]] && db=$w
            want=""
            continue
        fi
        case $w in
            --db=*) db=${w#--db=} ;;
            -?*=*) ;;
            -?*)
                opt=$w
                __stepflow_value "$command" "$w"
                want=$REPLY
                ;;
            *)
                __stepflow_commands "$command"
                if [[ " $REPLY " == *" $w "* ]]; then
                    command=${command:+$command }$w
                    pos=0
                else
                    pos+=1
                fi
                ;;
        esac
    done
    db=${db/#\~/$HOME}
"""


def case_function(
    name: str, comment: str, subject: str, branches: Iterable[tuple[str, str]]
) -> str:
    """`name() { case SUBJECT in PATTERN) REPLY=VALUE ;; ... *) REPLY="" ;; esac }`; a
    pattern ending in `*` is a glob, any other is matched literally."""
    lines = [f"{name}() {{  # {comment}", f"    case {subject} in"]
    for pattern, value in branches:
        glob = "*" if pattern.endswith("*") else ""
        lines.append(f'        "{pattern.rstrip("*")}"{glob}) REPLY="{value}" ;;')
    lines += ['        *) REPLY="" ;;', "    esac", "}"]
    return "\n".join(lines)


def data_functions(top: Command) -> str:
    """__stepflow_commands, __stepflow_options, __stepflow_value, __stepflow_positional."""
    commands = top.walk()
    return "\n\n".join(
        [
            case_function(
                "__stepflow_commands",
                "the sub-commands of the command $1 (its words)",
                '"$1"',
                (
                    (c.name, " ".join(s.path[-1] for s in c.commands))
                    for c in commands
                    if c.commands
                ),
            ),
            case_function(
                "__stepflow_options",
                "the options of the command $1",
                '"$1"',
                ((c.name, " ".join(f for o in c.options for f in o.flags)) for c in commands),
            ),
            case_function(
                "__stepflow_value",
                "what the option $2 of the command $1 takes; empty for a flag",
                '"$1 $2"',
                (
                    (f"{c.name} {flag}", option.kind)
                    for c in commands
                    for option in c.options
                    if option.kind is not None
                    for flag in option.flags
                ),
            ),
            case_function(
                "__stepflow_positional",
                "what the positional $2 (from 0) of the command $1 takes",
                '"$1 $2"',
                _positionals(commands),
            ),
        ]
    )


def _positionals(commands: Iterable[Command]) -> Iterable[tuple[str, str]]:
    for command in commands:
        for index, kind in enumerate(command.positionals):
            last = index == len(command.positionals) - 1
            # The last positional, when it repeats, takes every index from its own on (the
            # patterns before it are tried first).
            yield f"{command.name} {'*' if last and command.repeats else index}", kind
