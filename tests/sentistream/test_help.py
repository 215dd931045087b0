"""README: "Every subcommand takes `--help`; every flag with a setting behind it also reads an
environment variable, named at the end of its help line (`[env: SENTISTREAM_...]`)."

The subcommands come from the CLI's own table (`SUBCOMMANDS`), and the settings behind each come
from watching the calls its module makes to `add_settings_arguments`, so a new subcommand or a new
settings class is covered without editing this file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
from pydantic_settings import BaseSettings, EnvSettingsSource

import sentistream.settings
from sentistream.cli import SUBCOMMANDS, build_parser, main
from sentistream.settings import env_name, flag_name


@dataclass(frozen=True)
class Backed:
    """One flag that a settings field stands behind."""

    cls: type[BaseSettings]
    field: str
    flag: str


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def settings_backed_flags(command: str, monkeypatch: pytest.MonkeyPatch) -> list[Backed]:
    """Every (settings class, field, flag) the subcommand's module registers, seen by a spy."""
    module = importlib.import_module(SUBCOMMANDS[command][0])
    original = sentistream.settings.add_settings_arguments
    seen: list[Backed] = []

    def spy(parser, cls, fields=None, flags=None, **more):
        seen.extend(Backed(cls, f, flag_name(f, flags)) for f in (fields or cls.model_fields))
        return original(parser, cls, fields, flags, **more)

    monkeypatch.setattr(module, "add_settings_arguments", spy)
    subparser(command)
    return seen


def help_of(command: str) -> dict[str, str]:
    """flag -> its help line, as `--help` prints it (whitespace folded)."""
    actions = subparser(command)._actions
    return {flag: " ".join((a.help or "").split()) for a in actions for flag in a.option_strings}


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_subcommand_answers_help_with_its_description(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sentistream {command}")
    assert " ".join(SUBCOMMANDS[command][1].split()) in " ".join(out.split())


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_settings_backed_flag_names_its_environment_variable(command, monkeypatch, capsys):
    backed = settings_backed_flags(command, monkeypatch)
    helps = help_of(command)
    for b in backed:
        assert b.flag in helps, f"{command}: {b.cls.__name__}.{b.field} has no flag {b.flag}"
        assert helps[b.flag].endswith(f"[env: {env_name(b.cls, b.field)}]"), (command, b.flag, helps[b.flag])
    with pytest.raises(SystemExit):
        main([command, "--help"])
    printed = " ".join(capsys.readouterr().out.split())
    for b in backed:  # what the user reads, not only what argparse holds
        assert f"[env: {env_name(b.cls, b.field)}]" in printed


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_the_named_variable_is_the_one_the_settings_read(command, monkeypatch):
    """The note must not lie: pydantic-settings reads exactly the variable the help names."""
    backed = settings_backed_flags(command, monkeypatch)
    for b in backed:
        name = env_name(b.cls, b.field)
        default = b.cls.model_fields[b.field].default
        monkeypatch.setenv(name, json.dumps(default) if isinstance(default, (list, dict)) else "1")
        read = EnvSettingsSource(b.cls)()
        monkeypatch.delenv(name)
        # keyed by the field, or by the variable itself for a setting several classes share (shared_env)
        assert read.keys() & {b.field, name}, f"{command}: {name} does not set {b.cls.__name__}.{b.field}"


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_no_hand_written_flag_feeds_a_setting_without_the_note(command, monkeypatch):
    """A plain `add_argument` whose dest is a field of a settings class the command builds is read
    by `settings_from_args` all the same, so it is settings-backed and needs the note too."""
    backed = settings_backed_flags(command, monkeypatch)
    classes = {b.cls for b in backed}
    noted = {b.flag for b in backed}
    for action in subparser(command)._actions:
        for cls in classes:
            if action.dest in cls.model_fields and not set(action.option_strings) & noted:
                flags = "/".join(action.option_strings) or action.dest
                assert re.search(r"\[env: SENTISTREAM_\w+\]$", action.help or ""), (
                    f"{command} {flags} sets {cls.__name__}.{action.dest} without an [env: ...] note"
                )


def test_the_top_level_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "sentistream.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
