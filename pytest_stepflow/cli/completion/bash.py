"""`stepflow completion bash`: a bash completion function generated from the parser."""

from __future__ import annotations

from pytest_stepflow.cli.completion.shells import WORD_WALK, data_functions
from pytest_stepflow.cli.completion.spec import Command

INSTALL = """\
# bash completion for stepflow (`stepflow completion bash`, generated from its parser).
# Install: stepflow completion bash > ~/.local/share/bash-completion/completions/stepflow
# or, in ~/.bashrc: eval "$(stepflow completion bash)"
"""

# The words are read from COMP_LINE as far as the cursor, split at blanks: bash's own
# COMP_WORDS are also split at '=' and ':' (COMP_WORDBREAKS), which `--db=PATH` and node ids
# (`tests/test_a.py::test_b`) are full of. What bash then replaces is the part of the word
# after its last '=' or ':', so the candidates lose what comes before it.
WALKER = (
    r"""
__stepflow_offer() {  # add the values of kind $1 that start with $2 (database $3), each after $4
    local c
    case $1 in
        files)
            compopt -o filenames 2>/dev/null
            while IFS= read -r c; do COMPREPLY+=("$4$c"); done < <(compgen -f -- "$2")
            ;;
        runs | nodeids)
            while IFS= read -r c; do
                COMPREPLY+=("$4$c")
            done < <(command stepflow __complete "$1" ${3:+"--db=$3"} --prefix="$2" 2>/dev/null)
            ;;
        choice:*)
            for c in ${1#choice:}; do [[ $c == "$2"* ]] && COMPREPLY+=("$4$c"); done
            ;;
    esac
}

_stepflow() {
    local line=${COMP_LINE:0:COMP_POINT} cur="" command="" db="" want="" opt w i REPLY
    local -a words
    local -i pos=0
    read -ra words <<<"$line"
    if [[ ${#words[@]} -gt 1 && $line != *[[:space:]] ]]; then
        cur=${words[${#words[@]}-1]}
        unset "words[${#words[@]}-1]"
    fi
    for ((i = 1; i < ${#words[@]}; i++)); do
        w=${words[i]}
"""
    + WORD_WALK
    + r"""    COMPREPLY=()
    if [[ -n $want ]]; then
        __stepflow_offer "$want" "$cur" "$db" ""
    elif [[ $cur == -?*=* ]]; then
        __stepflow_value "$command" "${cur%%=*}"
        __stepflow_offer "$REPLY" "${cur#*=}" "$db" "${cur%%=*}="
    elif [[ $cur == -* ]]; then
        __stepflow_options "$command"
        COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
    else
        __stepflow_commands "$command"
        if [[ -n $REPLY ]]; then
            COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
        else
            __stepflow_positional "$command" "$pos"
            __stepflow_offer "$REPLY" "$cur" "$db" ""
        fi
    fi
    local breaks=""
    [[ $COMP_WORDBREAKS == *=* ]] && breaks+="="
    [[ $COMP_WORDBREAKS == *:* ]] && breaks+=":"
    if [[ -n $breaks && $cur == *[$breaks]* && ${#COMPREPLY[@]} -gt 0 ]]; then
        local head=${cur%"${cur##*[$breaks]}"}
        COMPREPLY=("${COMPREPLY[@]#"$head"}")
    fi
}

complete -F _stepflow stepflow
"""
)


def script(top: Command) -> str:
    return INSTALL + "\n" + data_functions(top) + "\n" + WALKER
