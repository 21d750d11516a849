"""`stepflow completion fish`: a fish completion generated from the parser."""

from __future__ import annotations

from collections.abc import Iterable

from pytest_stepflow.cli.completion.spec import Command

INSTALL = """\
# fish completion for stepflow (`stepflow completion fish`, generated from its parser).
# Install: stepflow completion fish > ~/.config/fish/completions/stepflow.fish
"""

# fish filters what __stepflow_complete prints by the current token; each line is a
# candidate, with its help after a tab.
WALKER = r"""
function __stepflow_offer --description 'the values of kind $argv[1] after $argv[4]'
    set -l kind $argv[1]
    set -l value $argv[2]
    set -l db $argv[3]
    set -l prefix $argv[4]
    switch "$kind"
        case files
            for path in (__fish_complete_path "$value")
                echo "$prefix$path"
            end
        case runs nodeids
            set -l where
            test -n "$db"; and set where "--db=$db"
            for found in (command stepflow __complete $kind $where --prefix="$value" 2>/dev/null)
                echo "$prefix$found"
            end
        case 'choice:*'
            for choice in (string split ' ' -- (string replace 'choice:' '' -- $kind))
                echo "$prefix$choice"
            end
    end
end

function __stepflow_complete --description 'what stepflow takes at the cursor'
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l command ''
    set -l db ''
    set -l want ''
    set -l opt ''
    set -l pos 0
    for w in $tokens[2..-1]
        if test -n "$want"
            test "$opt" = --db; and set db $w
            set want ''
            continue
        end
        switch $w
            case '--db=*'
                set db (string replace -- '--db=' '' $w)
            case '-*=*'
            case '-*'
                set opt $w
                set want (__stepflow_value "$command" $w)
            case '*'
                if contains -- $w (__stepflow_commands "$command" | string replace -r '\t.*' '')
                    set command (string trim -- "$command $w")
                    set pos 0
                else
                    set pos (math $pos + 1)
                end
        end
    end
    set db (string replace -r -- '^~' "$HOME" "$db")
    if test -n "$want"
        __stepflow_offer "$want" "$cur" "$db" ''
    else if string match -qr -- '^-.+=' "$cur"
        set -l parts (string split -m 1 = -- "$cur")
        set -l kind (__stepflow_value "$command" $parts[1])
        __stepflow_offer "$kind" "$parts[2]" "$db" "$parts[1]="
    else if string match -q -- '-*' "$cur"
        __stepflow_options "$command"
    else
        set -l commands (__stepflow_commands "$command")
        if set -q commands[1]
            printf '%s\n' $commands
        else
            set -l kind (__stepflow_positional "$command" $pos)
            __stepflow_offer "$kind" "$cur" "$db" ''
        end
    end
end

complete -c stepflow -f -a '(__stepflow_complete)'
"""


def script(top: Command) -> str:
    commands = top.walk()
    return "\n".join(
        [
            INSTALL,
            _switch(
                "__stepflow_commands",
                "the sub-commands of the command $argv[1], with their help",
                '"$argv[1]"',
                (
                    (c.name, [_line(s.path[-1], s.help) for s in c.commands])
                    for c in commands
                    if c.commands
                ),
            ),
            _switch(
                "__stepflow_options",
                "the options of the command $argv[1], with their help",
                '"$argv[1]"',
                (
                    (c.name, [_line(flag, o.help) for o in c.options for flag in o.flags])
                    for c in commands
                ),
            ),
            _switch(
                "__stepflow_value",
                "what the option $argv[2] of the command $argv[1] takes; nothing for a flag",
                '"$argv[1] $argv[2]"',
                (
                    (f"{c.name} {flag}", [_quote(o.kind)])
                    for c in commands
                    for o in c.options
                    if o.kind is not None
                    for flag in o.flags
                ),
            ),
            _switch(
                "__stepflow_positional",
                "what the positional $argv[2] (from 0) of the command $argv[1] takes",
                '"$argv[1] $argv[2]"',
                (
                    (
                        f"{c.name} {'*' if i == len(c.positionals) - 1 and c.repeats else i}",
                        [_quote(kind)],
                    )
                    for c in commands
                    for i, kind in enumerate(c.positionals)
                ),
            ),
            WALKER,
        ]
    )


def _switch(
    name: str, comment: str, subject: str, branches: Iterable[tuple[str, list[str]]]
) -> str:
    """A fish function printing each branch's lines (`*` in a quoted case is a wildcard)."""
    lines = [f"function {name} --description {_quote(comment)}", f"    switch {subject}"]
    for pattern, printed in branches:
        lines.append(f"        case {_quote(pattern)}")
        lines.append(f"            printf '%s\\n' {' '.join(printed)}")
    lines += ["    end", "end", ""]
    return "\n".join(lines)


def _line(name: str, text: str) -> str:
    return _quote(f"{name}\t{text}" if text else name)


def _quote(text: str) -> str:
    """A fish single-quoted string: only \\ and ' are escaped there."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
