"""`stepflow completion bash|zsh|fish` in the real shells, and `stepflow __complete`.

A project folder holds real recorded databases: its default `.stepflow/stepflow.db` (two
runs of test_alpha.py and test_beta.py, the second in the run group `nightly-7`), `other.db`
(one run of test_gamma.py) and a corrupt `corrupt.db`. Each shell sources the script that
`stepflow completion` printed and completes lines there, with this environment's `stepflow`
first on PATH (the scripts call `stepflow __complete` for runs and node ids):
- bash: COMP_LINE, COMP_POINT, COMP_WORDS (split at '=' and ':' as bash splits them) and
  COMP_CWORD set, `_stepflow` called, COMPREPLY printed;
- zsh: an interactive zsh on a pseudo-terminal (zpty) with compinit, a TAB typed, every
  candidate the completion system is given printed by a wrapper around `compadd`;
- fish: `complete -C LINE`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import INNER_ADDOPTS, StepflowRun, Store

from pytest_stepflow.cli import build_parser, main
from pytest_stepflow.environment import CI_VARIABLES
from pytest_stepflow.query.database import open_database

pytestmark = pytest.mark.backends  # the reader's new question, on SQLite and PostgreSQL

ALPHA = """
import pytest


def test_a():
    pass


@pytest.mark.parametrize("x", ["x", "y"])
def test_b(x):
    pass
"""
ALPHA_IDS = ["test_alpha.py::test_a", "test_alpha.py::test_b[x]", "test_alpha.py::test_b[y]"]
BETA = "def test_c():\n    pass\n"
GAMMA = "def test_g():\n    pass\n"
GROUP = "nightly-7"
RUN_REFS = ["latest", "latest~1", "2", "1", "group:latest", f"group:{GROUP}"]
SHELLS = ("bash", "zsh", "fish")
BIN = Path(sys.executable).parent  # this environment's `stepflow` is here


def _missing(shell: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(shell) is None,
        reason=f"{shell} is not installed (apt-get install {shell}; CI installs it)",
    )


def _clean_environ() -> dict[str, str]:
    """This process's environment without a CI's or stepflow's variables."""
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    for name in [k for k in env if k.startswith("STEPFLOW_")]:
        del env[name]
    return env


@dataclass
class Project:
    root: Path
    env: dict[str, str]  # the shells': this environment's bin first on PATH

    def script(self, shell: str) -> Path:
        return self.root / f"stepflow.{shell}"


def _record(root: Path, db: Path, *files: str, group: str | None = None) -> None:
    where = [f"--stepflow-db={db}", *files]
    env = {**_clean_environ(), "PYTEST_ADDOPTS": INNER_ADDOPTS}
    if group:
        env["STEPFLOW_RUN_GROUP"] = group
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--stepflow", *where],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _print_script(shell: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["completion", shell]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_alpha.py").write_text(ALPHA)
    (root / "test_beta.py").write_text(BETA)
    (root / "test_gamma.py").write_text(GAMMA)
    default = root / ".stepflow" / "stepflow.db"
    _record(root, default, "test_alpha.py", "test_beta.py")
    _record(root, default, "test_alpha.py", "test_beta.py", group=GROUP)
    _record(root, root / "other.db", "test_gamma.py")
    (root / "corrupt.db").write_bytes(b"not a database at all, just text" * 100)
    (root / "mylist.toml").write_text("")
    for shell in SHELLS:
        (root / f"stepflow.{shell}").write_text(_print_script(shell))
    env = {**_clean_environ(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["HOME"] = str(root)  # no user's shell configuration
    assert shutil.which("stepflow", path=env["PATH"]) == str(BIN / "stepflow")
    return Project(root, env)


# -- the parser, walked here on its own -------------------------------------------------


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if name != "__complete":
                    yield from _commands(child, (*path, name))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
        if name != "__complete"
    }


# -- the shells --------------------------------------------------------------------------


def _run(project: Project, argv: list[str]) -> str:
    result = subprocess.run(
        argv, cwd=project.root, env=project.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def _bash_words(line: str) -> list[str]:
    """COMP_WORDS as bash makes them: split at blanks, and '=' and ':' runs words of
    their own (COMP_WORDBREAKS)."""
    words = [part for word in line.split() for part in re.findall(r"[=:]+|[^=:]+", word)]
    return [*words, ""] if line.endswith(" ") else words


def bash(project: Project, *lines: str) -> list[list[str]]:
    """What bash's completion offers at the end of each line (COMPREPLY)."""
    q = shlex.quote
    program = [f"source {q(str(project.script('bash')))}"]
    for line in lines:
        words = _bash_words(line)
        program.append(
            f"COMP_LINE={q(line)}; COMP_POINT=${{#COMP_LINE}}; "
            f"COMP_WORDS=({' '.join(q(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
            f"COMPREPLY=(); _stepflow stepflow {q(words[-1])} {q(words[-2])}; "
            'printf "%s\\n" "${COMPREPLY[@]}"; echo "<end>"'
        )
    out = _run(project, ["bash", "--norc", "--noprofile", "-c", "\n".join(program)])
    return [[c for c in chunk.splitlines() if c] for chunk in out.split("<end>\n")[:-1]]


ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'autoload -Uz compinit; compinit -u -D'
zpty -w z "source ${(q)SCRIPT}"
# Every candidate given to the completion system, marked; the mark written so that the
# terminal's echo of this line does not hold it.
zpty -w z 'compadd() {'
zpty -w z '    local -a h; builtin compadd -O h "$@"; print -rl -- "${(@)h/#/<"HIT">}"'
zpty -w z '    builtin compadd "$@"'
zpty -w z '}'
zpty -w z 'comppostfuncs=(exit)'
zpty -n -w z "$LINE"$'\t'
out=""
while zpty -r z chunk; do out+=$chunk; done
print -r -- "$out"
"""


def zsh(project: Project, line: str) -> list[str]:
    """What zsh's completion system is given at the end of `line` (TAB typed)."""
    driver = project.root / "zsh_driver.zsh"
    driver.write_text(ZSH_DRIVER)
    env = {**project.env, "SCRIPT": str(project.script("zsh")), "LINE": line}
    result = subprocess.run(
        ["zsh", "-f", str(driver)],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    hits = re.findall(r"<HIT>([^\r\n\x1b]*)", result.stdout)
    return list(dict.fromkeys(hits))  # compsys may add a candidate twice (measuring first)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(project: Project, *lines: str) -> list[list[str]]:
    """What fish completes at the end of each line (`complete -C`), without the help."""
    program = [f"source {_fish_quote(str(project.script('fish')))}"]
    program += [f"complete -C {_fish_quote(line)}; echo '<end>'" for line in lines]
    out = _run(project, ["fish", "--no-config", "-c", "\n".join(program)])
    return [
        [c.split("\t")[0] for c in chunk.splitlines() if c] for chunk in out.split("<end>\n")[:-1]
    ]


# -- every command and option, in every script ----------------------------------------


def _data(project: Project, shell: str, calls: list[str]) -> list[str]:
    """Each call of a script's data functions, run in the shell itself: what it answers."""
    script = str(project.script(shell))
    if shell == "fish":
        program = [f"source {_fish_quote(script)}"]
        program += [f"{call} | string replace -r '\\t.*' ''; echo '<end>'" for call in calls]
        out = _run(project, ["fish", "--no-config", "-c", "\n".join(program)])
        return [" ".join(chunk.split()) for chunk in out.split("<end>\n")[:-1]]
    # zsh's script registers itself with compdef (compinit's), which is not needed here.
    program = ["compdef() { :; }", f"source {shlex.quote(script)}"]
    program += [f'{call}; echo "$REPLY"' for call in calls]
    argv = ["bash", "--norc", "--noprofile", "-c"] if shell == "bash" else ["zsh", "-f", "-c"]
    return _run(project, [*argv, "\n".join(program)]).splitlines()


@pytest.mark.parametrize("shell", [pytest.param(s, marks=_missing(s)) for s in SHELLS])
def test_every_command_and_option_is_in_the_script(project: Project, shell: str) -> None:
    """Walked from the parser here, independently of the generator: nothing can go
    missing from a script without this failing."""
    commands = list(_commands(build_parser()))
    assert len(commands) > 25 and ("quarantine", "add") in dict(commands)
    q = shlex.quote
    calls = [f"__stepflow_options {q(' '.join(path))}" for path, _ in commands]
    calls += [f"__stepflow_commands {q(' '.join(path))}" for path, _ in commands]
    answers = _data(project, shell, calls)
    options, subcommands = answers[: len(commands)], answers[len(commands) :]
    for (path, parser), offered, children in zip(commands, options, subcommands, strict=True):
        assert set(offered.split()) == _flags(parser), path
        assert set(children.split()) == _subcommands(parser), path
    assert "__complete" not in " ".join(subcommands)  # hidden
    if shell == "zsh":  # what zsh offers: each with its help, as `name:help`
        shown = [
            f"__stepflow_described {q(' '.join(path))} {what}; REPLY=${{(j: :)${{reply%%:*}}}}"
            for what in ("options", "commands")
            for path, _ in commands
        ]
        answers = _data(project, shell, shown)
        assert answers == options + subcommands


def test_completion_command_help_and_the_hidden_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["completion", "--help"])
    out = capsys.readouterr().out
    assert "stepflow completion bash > ~/.local/share/bash-completion/completions/stepflow" in out
    assert 'stepflow completion zsh > "${fpath[1]}/_stepflow"' in out
    assert "stepflow completion fish > ~/.config/fish/completions/stepflow.fish" in out
    assert 'eval "$(stepflow completion bash)"' in out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "completion" in out and "__complete" not in out


# -- bash ----------------------------------------------------------------------------------


def test_bash_commands_options_and_choices(project: Project) -> None:
    sh, top, options, choice, after_equals, phase, nested, shells = bash(
        project,
        "stepflow sh",
        "stepflow ",
        "stepflow steps --ou",
        "stepflow steps --outcome ",
        "stepflow steps --outcome=x",
        "stepflow --db=other.db slowest --phase t",
        "stepflow quarantine ",
        "stepflow completion ",
    )
    assert "show" in sh and all(c.startswith("sh") for c in sh)
    assert {"runs", "show", "quarantine", "completion", "summary"} <= set(top)
    assert "__complete" not in top
    assert options == ["--outcome"]
    assert choice == ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    assert after_equals == ["xfailed", "xpassed"]  # bash replaces what follows the '='
    assert set(phase) == {"total", "teardown"}
    assert nested == ["add", "rm", "ls", "suggest", "export", "import"]
    assert shells == ["bash", "zsh", "fish"]


def test_bash_runs_and_node_ids_from_the_database(project: Project) -> None:
    runs, group, nodeids, nested, second = bash(
        project,
        "stepflow show ",
        "stepflow diff 1 group:",
        "stepflow history test_alpha.py::test_b",
        "stepflow quarantine add test_a",
        "stepflow logs test_beta.py::test_c la",
    )
    assert runs == RUN_REFS
    assert group == ["latest", GROUP]  # after the ':' bash splits at
    assert nodeids == ["test_b[x]", "test_b[y]"]  # after the last ':'
    assert nested == ALPHA_IDS
    assert second == ["latest", "latest~1"]  # logs NODEID RUN: the run second


def test_bash_reads_the_database_given_on_the_line(project: Project) -> None:
    after, before, word, env_db = bash(
        project,
        "stepflow history --db=other.db test_",
        "stepflow --db=other.db history test_",
        "stepflow history --db other.db test_",
        "stepflow show --db=other.db ",
    )
    assert after == before == word == ["test_gamma.py::test_g"]
    assert env_db == ["latest", "1", "group:latest"]


def test_bash_files_for_path_options(project: Project) -> None:
    db, output, equals, merge = bash(
        project,
        "stepflow runs --db=cor",
        "stepflow export -o myl",
        "stepflow quarantine export --file=my",
        "stepflow merge other.db myl",
    )
    assert db == ["corrupt.db"]
    assert output == equals == merge == ["mylist.toml"]


def test_bash_is_silent_on_a_bad_database(project: Project) -> None:
    # `bash` asserts that nothing reached stderr.
    corrupt, missing, nodeids = bash(
        project,
        "stepflow show --db=corrupt.db ",
        "stepflow show --db=missing.db ",
        "stepflow history --db=corrupt.db test_",
    )
    assert corrupt == missing == nodeids == []


# -- zsh and fish ------------------------------------------------------------------------


@_missing("zsh")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("stepflow quarantine ", ["add", "rm", "ls", "suggest", "export", "import"]),
        ("stepflow steps --outcome=x", ["xfailed", "xpassed"]),
        ("stepflow show ", RUN_REFS),
        ("stepflow history test_alpha.py::test_b", ALPHA_IDS[1:]),
        ("stepflow --db=other.db history test_", ["test_gamma.py::test_g"]),
        ("stepflow show --db=corrupt.db ", []),
    ],
)
def test_zsh(project: Project, line: str, expected: list[str]) -> None:
    assert sorted(zsh(project, line)) == sorted(expected)


@_missing("zsh")
def test_zsh_options_and_files(project: Project) -> None:
    assert {"--outcome", "--db", "--limit", "--fail-on"} <= set(zsh(project, "stepflow steps --"))
    assert zsh(project, "stepflow export --output=myl") == ["mylist.toml"]


@_missing("fish")
def test_fish(project: Project) -> None:
    found = fish(
        project,
        "stepflow quarantine ",
        "stepflow steps --ou",
        "stepflow steps --outcome=x",
        "stepflow show ",
        "stepflow history test_alpha.py::test_b",
        "stepflow --db=other.db history test_",
        "stepflow export -o myl",
        "stepflow show --db=corrupt.db ",
    )
    assert (
        found
        == [
            ["add", "export", "import", "ls", "rm", "suggest"],  # fish sorts
            ["--outcome"],
            ["--outcome=xfailed", "--outcome=xpassed"],
            sorted(RUN_REFS),
            ALPHA_IDS[1:],
            ["test_gamma.py::test_g"],
            ["mylist.toml"],
            [],
        ]
    )


# -- stepflow __complete -------------------------------------------------------------------


def _complete(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    code = main(["__complete", *args])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    return captured.out.splitlines()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.sqlite_only("files that are no readable stepflow database; a server that is down")
def test_complete_is_silent_on_any_error(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    newer = tmp_path / "newer.db"
    shutil.copy(project.root / ".stepflow" / "stepflow.db", newer)
    with contextlib.closing(sqlite3.connect(newer)) as conn:
        conn.execute("PRAGMA user_version = 999")
    for db in (
        project.root / "corrupt.db",
        tmp_path / "missing.db",
        newer,
        tmp_path,  # a folder
        f"postgresql://stepflow@127.0.0.1:{_free_port()}/none",
    ):
        assert _complete(capsys, "runs", f"--db={db}") == []
    assert _complete(capsys, "colours", f"--db={project.root / 'other.db'}") == []


@pytest.mark.sqlite_only("a write transaction held on the SQLite file")
def test_complete_is_not_blocked_by_a_writer(
    project: Project, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    db = project.root / "other.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO tests (nodeid, file, name) VALUES ('zz.py::t', 'zz.py', 't')")
        assert _complete(capsys, "nodeids", f"--db={db}") == ["test_gamma.py::test_g"]
        writer.execute("ROLLBACK")


def test_nodeids_starting_on_both_backends(
    run_stepflow: Callable[..., StepflowRun],
    pytester: pytest.Pytester,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(test_alpha=ALPHA, test_beta=BETA)
    run_stepflow()
    capsys.readouterr()  # the run's own output
    with open_database(store.location) as db:
        assert db.nodeids_starting("", limit=200) == [*ALPHA_IDS, "test_beta.py::test_c"]
        assert db.nodeids_starting("", limit=2) == ALPHA_IDS[:2]
        assert db.nodeids_starting("test_alpha.py::test_b[", limit=9) == ALPHA_IDS[1:]
        assert db.nodeids_starting("test_alpha.py::test_b[y]", limit=9) == ALPHA_IDS[2:]
        assert db.nodeids_starting("test_%", limit=9) == []  # no LIKE wildcards
        assert db.nodeids_starting("test_", limit=9) == [*ALPHA_IDS, "test_beta.py::test_c"]
        assert db.nodeids_starting("TEST_", limit=9) == []  # node ids are case-sensitive
        assert db.nodeids_starting("test_b", limit=9) == ["test_beta.py::test_c"]
    where = f"--db={store.location}"
    assert _complete(capsys, "nodeids", where, "--prefix=test_alpha.py::test_b") == ALPHA_IDS[1:]
    assert _complete(capsys, "runs", where) == ["latest", "1", "group:latest"]
    assert _complete(capsys, "runs", where, "--prefix=lat") == ["latest"]
