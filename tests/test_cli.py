"""The command line: help for every command, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from srkit import cli
from srkit.errors import InputError


def _all_commands() -> list[list[str]]:
    cmds = [[name] for name in cli.COMMANDS]
    for group, (_, table) in cli.GROUPS.items():
        cmds += [[group, name] for name in table]
    return cmds


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in [*cli.COMMANDS, *cli.GROUPS]:
        assert name in out


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: srkit " + " ".join(command))
    assert len(out.splitlines()) > 3  # options are documented, not just a usage line


def test_group_without_subcommand_prints_help_and_fails(capsys):
    assert cli.main(["data"]) == 2
    assert "pack" in capsys.readouterr().err


def test_srkit_error_is_one_line_without_traceback(monkeypatch, capsys):
    def boom(args):
        raise InputError("not a readable image", "/tmp/x.png")

    monkeypatch.setitem(cli.COMMANDS, "models", ("srkit.commands.models", "x"))
    import srkit.commands.models as models_cmd

    monkeypatch.setattr(models_cmd, "run", boom)
    code = cli.main(["models"])
    err = capsys.readouterr().err
    assert code == InputError.exit_code != 0
    assert err == "srkit: error: /tmp/x.png: not a readable image\n"


def test_debug_shows_the_traceback(monkeypatch):
    import srkit.commands.models as models_cmd

    def boom(args):
        raise InputError("bad")

    monkeypatch.setattr(models_cmd, "run", boom)
    with pytest.raises(InputError):
        cli.main(["models", "--debug"])


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "srkit", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith("srkit ")


def test_closed_pipe_is_not_an_error():
    """`srkit models | head -1`: the reader leaves early; no error line, exit 0."""
    proc = subprocess.run(f"{sys.executable} -m srkit models | head -1", shell=True, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.startswith("NAME") and proc.stderr == ""
    status = subprocess.run(f"{sys.executable} -m srkit models | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert status.stdout.strip() == "0" and "Broken pipe" not in status.stderr
