"""`stepflow completion zsh`: a zsh (compsys) completion function generated from the parser."""

from __future__ import annotations

from collections.abc import Iterable

from pytest_stepflow.cli.completion.shells import WORD_WALK, data_functions
from pytest_stepflow.cli.completion.spec import Command

INSTALL = """\
#compdef stepflow
# zsh completion for stepflow (`stepflow completion zsh`, generated from its parser).
# Install: stepflow completion zsh > "${fpath[1]}/_stepflow"   (then a new shell)
# or, in ~/.zshrc after compinit: source <(stepflow completion zsh)
"""

# zsh's words are whole (`=` and `:` split nothing) and quoted as typed: (Q) unquotes them.
WALKER = (
    r"""
__stepflow_offer() {  # offer the values of kind $1 from the database $2; PREFIX is the start
    local -a found
    case $1 in
        files) _files ;;
        runs | nodeids)
            found=(${(f)"$(command stepflow __complete $1 ${2:+--db=$2} \
                --prefix=${(Q)PREFIX} 2>/dev/null)"})
            compadd -a found
            ;;
        choice:*)
            found=(${=${1#choice:}})
            compadd -a found
            ;;
    esac
}

_stepflow() {
    local cur=${words[CURRENT]} command="" db="" want="" opt w REPLY
    local -a reply
    local -i i pos=0
    for ((i = 2; i < CURRENT; i++)); do
        w=${(Q)words[i]}
"""
    + WORD_WALK
    + r"""    if [[ -n $want ]]; then
        __stepflow_offer "$want" "$db"
    elif [[ $cur == -?*=* ]]; then
        __stepflow_value "$command" "${cur%%=*}"
        compset -P '*='
        __stepflow_offer "$REPLY" "$db"
    elif [[ $cur == -* ]]; then
        __stepflow_described "$command" options
        _describe -t options 'stepflow option' reply
    else
        __stepflow_described "$command" commands
        if (( $#reply )); then
            _describe -t commands 'stepflow command' reply
        else
            __stepflow_positional "$command" "$pos"
            __stepflow_offer "$REPLY" "$db"
        fi
    fi
}

# Autoloaded from $fpath this file is _stepflow's body: complete now; sourced, register it.
if [[ $funcstack[1] == _stepflow ]]; then
    _stepflow "$@"
else
    compdef _stepflow stepflow
fi
"""
)


def script(top: Command) -> str:
    return INSTALL + "\n" + data_functions(top) + "\n\n" + _described(top) + "\n" + WALKER


def _described(top: Command) -> str:
    """__stepflow_described COMMAND commands|options: `reply`, each `name:help`."""
    lines = [
        "__stepflow_described() {  # reply: the sub-commands or options ($2) of $1, with help",
        '    case "$2 $1" in',
    ]
    for command in top.walk():
        if command.commands:
            lines.append(
                _branch("commands", command, ((c.path[-1], c.help) for c in command.commands))
            )
        described = ((flag, o.help) for o in command.options for flag in o.flags)
        lines.append(_branch("options", command, described))
    lines += ["        *) reply=() ;;", "    esac", "}"]
    return "\n".join(lines)


def _branch(what: str, command: Command, items: Iterable[tuple[str, str]]) -> str:
    entries = " ".join(_quote(f"{name}:{text}" if text else name) for name, text in items)
    return f'        "{what} {command.name}") reply=({entries}) ;;'


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
