"""The README and `--help` agree: its command examples run through the real parser and settings, its
ports and variables are the code's (issue #25: each mismatch below was a newcomer's first error).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from sentistream.cli import SUBCOMMANDS, build_parser
from sentistream.settings import settings_from_args

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def examples(text: str = README) -> list[list[str]]:
    """argv of every `sentistream ...` example in the last column of the README's tables (placeholders
    filled in; the first column names commands, `sentistream replay` without its PATH)."""
    found = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        example = re.split(r"(?<!\\)\|", line.strip())[-2]
        for code in re.findall(r"`([^`]+)`", example):
            code = re.sub(r"<[^>]+>", "PLACEHOLDER", code.replace("\\|", "|"))
            if code.startswith("sentistream ") and "|" not in code:
                found.append(shlex.split(code)[1:])
    return found


def example_problems(argv: list[str]) -> list[str]:
    """What the real CLI refuses in `argv` before it does any work: unknown flags, and a backend that
    needs a model given none (the check `load_engine` makes first)."""
    from model.engines import load_engine
    from model.settings import ModelSettings
    from sentistream.errors import SentistreamError

    try:
        args = build_parser(argv[0]).parse_args(argv)
    except SystemExit:
        return [f"`sentistream {' '.join(argv)}` is refused by the parser"]
    if argv[0] not in ("predict", "evaluate", "worker") or "--explain" in argv:
        return []
    settings = settings_from_args(ModelSettings, args, model=None)  # the example's own flags but the path
    if getattr(args, "model", None) is None:
        try:
            load_engine(None, settings.backend, "cpu")
        except SentistreamError as exc:
            return [f"`sentistream {' '.join(argv)}`: {exc}"]
    return []


def test_the_readme_shows_examples_of_every_subcommand():
    shown = {argv[0] for argv in examples()}
    assert shown >= set(SUBCOMMANDS) - {"demo"}, set(SUBCOMMANDS) - shown


def test_every_readme_example_is_accepted_by_the_cli(monkeypatch):
    for name in [k for k in __import__("os").environ if k.startswith("SENTISTREAM_")]:
        monkeypatch.delenv(name)
    problems = [p for argv in examples() for p in example_problems(argv)]
    assert problems == []


def test_the_example_check_catches_onnx_without_a_model_and_an_unknown_flag():
    assert example_problems(["predict", "--input", "t.csv", "--backend", "onnx"]) == [
        "`sentistream predict --input t.csv --backend onnx`: --backend onnx needs --model "
        "(a bundle or Hugging Face model directory)"
    ]
    assert example_problems(["export", "--modle", "x"]) == [
        "`sentistream export --modle x` is refused by the parser"
    ]


def default_ports() -> dict[str, int]:
    from dashboard.settings import DashboardSettings
    from infra.broker import BrokerSettings
    from stream.monitor.settings import MonitorSettings
    from stream.worker.settings import WorkerSettings

    fields = {
        "kafka": (BrokerSettings, "port"),
        "worker": (WorkerSettings, "web_port"),
        "monitor": (MonitorSettings, "web_port"),
        "dashboard": (DashboardSettings, "port"),
    }
    return {name: cls.model_fields[f].default for name, (cls, f) in fields.items()}


def port_problems(text: str) -> list[str]:
    """The ports table names each default port; no `--processes N` example's range takes another's."""
    problems = []
    section = text.split("## Ports", 1)[1].split("\n## ", 1)[0] if "## Ports" in text else ""
    listed = {int(p) for p in re.findall(r"^\| (\d+)", section, re.M)}
    problems += [
        f"the ports table lacks {name}'s {port}"
        for name, port in default_ports().items()
        if port not in listed
    ]
    worker = default_ports()["worker"]
    others = {port: name for name, port in default_ports().items() if name != "worker"}
    for argv in examples(text):
        if "--processes" in argv:
            n = int(argv[argv.index("--processes") + 1])
            first = int(argv[argv.index("--web-port") + 1]) if "--web-port" in argv else worker
            problems += [
                f"`{' '.join(argv)}` serves {first}-{first + n - 1}, which takes the {others[p]}'s {p}"
                for p in range(first, first + n)
                if p in others
            ]
    return problems


def test_the_readme_lists_every_port_once_and_no_example_collides():
    assert port_problems(README) == []


def test_the_port_check_catches_the_processes_example_on_the_monitors_port():
    old = "| | `sentistream worker --model models/latest --device cuda --processes 4` (web views on 6066-6069) |\n"
    assert (
        "`worker --model models/latest --device cuda --processes 4` serves 6066-6069, which takes the monitor's 6067"
        in port_problems(old + README)
    )


def test_the_readme_names_the_variable_each_offline_commands_model_reads():
    """`export --model` reads SENTISTREAM_TRAIN_MODEL, `evaluate --model` SENTISTREAM_MODEL."""
    row = next(line for line in README.splitlines() if line.startswith("| `SENTISTREAM_TRAIN_*`"))
    for command in ("evaluate", "export"):
        sub = build_parser(command)._subparsers._group_actions[0].choices[command]
        (help_text,) = [a.help for a in sub._actions if "--model" in a.option_strings]
        env = re.search(r"\[env: (\w+)\]", help_text).group(1)
        assert f"`{command} --model` reads `{env}`" in row, (command, env)


def test_the_readme_says_the_demo_may_download_its_hub_model():
    from infra.demo import DemoSettings

    assert f"`{DemoSettings.model_fields['hub_model'].default}`" in README


def test_demo_help_names_every_process_it_starts():
    tree = ast.parse((ROOT / "infra" / "demo.py").read_text())
    spawned = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "_spawn"
        and isinstance(node.args[0], ast.Constant)
    }
    assert spawned >= {"worker", "replay", "sink", "monitor", "dashboard"}, spawned
    assert all(name in SUBCOMMANDS["demo"][1] for name in spawned), (spawned, SUBCOMMANDS["demo"][1])


@pytest.mark.parametrize("port_name", ["kafka", "worker", "monitor", "dashboard"])
def test_the_ports_table_says_which_flag_or_variable_sets_each_port(port_name):
    section = README.split("## Ports", 1)[1].split("\n## ", 1)[0]
    port = default_ports()[port_name]
    row = next(line for line in section.splitlines() if line.startswith(f"| {port} "))
    assert "SENTISTREAM_" in row, row
