"""The command line's shared contracts: one list of Kafka connection flags, no password flag, lazy imports."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dashboard.cli import KAFKA_FLAGS as DASHBOARD_KAFKA_FLAGS
from dashboard.cli import settings_env
from sentistream.cli import SUBCOMMANDS, build_parser, main
from sentistream.settings import settings_from_args
from stream.feeders.produce_cli import connection_settings
from stream.settings import KafkaSettings

KAFKA_COMMANDS = ["worker", "produce", "replay", "dashboard", "sink", "monitor"]
CONNECTION = {
    "--broker",
    "--security-protocol",
    "--sasl-mechanism",
    "--sasl-username",
    "--sasl-password-file",
    "--ssl-cafile",
}
SASL = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--sasl-username", "ann"]


def flags_of(command: str) -> set[str]:
    """Every option string `sentistream COMMAND` accepts."""
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in sub.choices[command]._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
def test_every_command_that_talks_to_kafka_takes_the_same_connection_flags(command: str) -> None:
    assert flags_of(command) >= CONNECTION


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_no_command_takes_the_password_as_a_flag(command: str) -> None:
    assert not {flag for flag in flags_of(command) if flag.startswith("--sasl-password")} - {
        "--sasl-password-file"
    }


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
def test_a_password_flag_is_refused_not_taken_for_an_abbreviation(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser(command).parse_args([command, "--sasl-password", "hunter2"])
    assert caught.value.code == 2
    assert "--sasl-password" in capsys.readouterr().err


def test_the_password_file_is_read_once_and_reaches_the_kafka_clients(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret pass\n")
    args = build_parser("produce").parse_args(["produce", "hi", *SASL, "--sasl-password-file", str(secret)])
    kafka, _ = connection_settings(args)
    secret.write_text("changed later")  # read when the settings are built, not on every connection
    security = kafka.aiokafka_security()
    assert security["sasl_plain_password"] == "s3cret pass"
    assert security["sasl_plain_username"] == "ann"
    assert "s3cret" not in repr(kafka) and "s3cret" not in str(kafka.model_dump())


def test_the_password_file_can_come_from_the_environment(tmp_path, monkeypatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-mounted-secret")
    monkeypatch.setenv("SENTISTREAM_SASL_PASSWORD_FILE", str(secret))
    kafka = settings_from_args(KafkaSettings, argparse.Namespace(sasl_mechanism="PLAIN"))
    assert kafka.aiokafka_security()["sasl_plain_password"] == "from-a-mounted-secret"


def test_the_password_still_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SENTISTREAM_SASL_PASSWORD", "env-secret")
    kafka = settings_from_args(KafkaSettings, argparse.Namespace(sasl_mechanism="PLAIN"))
    assert kafka.aiokafka_security()["sasl_plain_password"] == "env-secret"


def test_a_missing_password_file_is_one_line_naming_the_flag(tmp_path, capsys) -> None:
    missing = tmp_path / "nope"
    assert main(["produce", "hi", *SASL, "--sasl-password-file", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--sasl-password-file" in err and str(missing) in err


def test_two_sources_of_the_password_are_refused(tmp_path, monkeypatch, capsys) -> None:
    secret = tmp_path / "password"
    secret.write_text("a")
    monkeypatch.setenv("SENTISTREAM_SASL_PASSWORD", "b")
    assert main(["produce", "hi", *SASL, "--sasl-password-file", str(secret)]) == 2
    assert "SASL password is set twice" in capsys.readouterr().err


def test_the_dashboard_hands_the_password_file_not_the_password_to_streamlit(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("never-in-env")
    kafka = KafkaSettings(sasl_mechanism="PLAIN", sasl_password_file=secret)
    env = settings_env(kafka, DASHBOARD_KAFKA_FLAGS)
    assert env["SENTISTREAM_SASL_PASSWORD_FILE"] == str(secret)
    assert "never-in-env" not in env.values() and "None" not in env.values()  # unset stays unset


def test_kafka_status_does_not_import_torch(tmp_path) -> None:
    code = (
        "import sys; from sentistream.cli import main; "
        f"main(['kafka', 'status', '--data-dir', {str(tmp_path)!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'faust', 'streamlit') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentistream", *argv], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["produce", "hi", "--security-protocol", "SASL_SSL"], "needs --sasl-mechanism, --sasl-username"),
        (["produce", "hi", *SASL], "needs --sasl-password-file (or SENTISTREAM_SASL_PASSWORD)"),
        (
            ["produce", "hi", "--security-protocol", "SSL", "--ssl-cafile", "/nonexistent/ca.pem"],
            "no such file",
        ),
        (["sink", "--output", "/etc/hostname"], "is a file, not a folder"),
        (["sink", "--output", "/etc/hostname/history"], "is a file, not a folder"),
        (["deploy", "/nonexistent/bundle"], "no such bundle directory: /nonexistent/bundle"),
    ],
)
def test_a_connection_or_output_that_cannot_work_is_one_line_and_exit_2_before_any_work(argv, says) -> None:
    # Broker 127.0.0.1:1: had the command gone on, it would have failed on the connection instead.
    done = run_cli(*argv, "--broker", "kafka://127.0.0.1:1")
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert "\n" not in err and "Traceback" not in err and says in err, err


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["predict", "-v", "--backend", "vader", "hi"], True),
        (["predict", "--backend", "vader", "hi", "--verbose"], True),
        (["-v", "predict", "--backend", "vader", "hi"], True),
        (["predict", "--backend", "vader", "hi"], False),
    ],
)
def test_verbose_works_before_and_after_the_subcommand(argv, verbose, monkeypatch, capsys) -> None:
    import logging

    import sentistream.cli

    levels: list[int] = []
    monkeypatch.setattr(sentistream.cli.logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert main(argv) == 0
    assert levels == [logging.DEBUG if verbose else logging.INFO]


@pytest.fixture
def worker_args(monkeypatch) -> list[argparse.Namespace]:
    """What `sentistream worker` would run with (the worker itself replaced by a recorder)."""
    import stream.worker.cli

    seen: list[argparse.Namespace] = []
    monkeypatch.setitem(
        stream.worker.cli.COMMANDS,
        "worker",
        (stream.worker.cli.add_arguments, lambda args: seen.append(args)),
    )
    monkeypatch.delenv("SENTISTREAM_JSON_LOGS", raising=False)
    return seen


@pytest.mark.parametrize(
    ("env", "argv", "json_logs"),
    [(None, [], False), ("1", [], True), ("true", [], True), ("0", [], False), ("0", ["--json-logs"], True)],
)
def test_json_logs_come_from_the_flag_or_the_environment(
    env, argv, json_logs, worker_args, monkeypatch
) -> None:
    if env is not None:
        monkeypatch.setenv("SENTISTREAM_JSON_LOGS", env)
    assert main(["worker", *argv]) == 0
    assert [a.json_logs for a in worker_args] == [json_logs]


def test_a_bad_json_logs_variable_is_one_line_and_exit_2(worker_args, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SENTISTREAM_JSON_LOGS", "maybe")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SENTISTREAM_JSON_LOGS" in err[0] and worker_args == []


def test_the_json_logs_help_names_its_variable(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    assert "[env: SENTISTREAM_JSON_LOGS]" in " ".join(capsys.readouterr().out.split())


def test_dashboard_history_dir_flag_reaches_the_streamlit_process(tmp_path, monkeypatch, capsys) -> None:
    """The History tab reads SENTISTREAM_DASHBOARD_HISTORY_DIR in the Streamlit process; the flag sets it."""
    import dashboard.cli

    launched: list[dict] = []
    monkeypatch.setattr(dashboard.cli.os, "execve", lambda path, argv, env: launched.append(env))
    monkeypatch.delenv("SENTISTREAM_DASHBOARD_HISTORY_DIR", raising=False)
    assert main(["dashboard", "--history-dir", str(tmp_path)]) == 0
    assert launched[0]["SENTISTREAM_DASHBOARD_HISTORY_DIR"] == str(tmp_path)
    assert main(["dashboard"]) == 0
    assert "SENTISTREAM_DASHBOARD_HISTORY_DIR" not in launched[1]
