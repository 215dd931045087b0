"""`sentistream`: one console command with a subcommand per job.

Subcommands live next to the code they drive (`infra/cli.py`, `stream/worker/cli.py`, ...). Each such
module exposes `COMMANDS`: a dict of name -> (add_arguments, run); the one-line help is here, in
`SUBCOMMANDS`, so `--help` imports nothing. Only the module of the subcommand being run is imported, so `sentistream kafka status` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sentistream import __version__
from sentistream.errors import SentistreamError
from sentistream.settings import LogSettings, env_name, settings_from_args

# subcommand -> (module that implements it, one-line help shown by `sentistream --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("infra.cli", "start, stop or inspect the local Apache Kafka broker"),
    "train": ("training.cli", "fine-tune a Hugging Face encoder on a labelled dataset"),
    "evaluate": ("training.cli", "evaluate a model bundle on a labelled dataset"),
    "export": ("training.cli", "export a trained model to ONNX (fp32 and int8)"),
    "eda": ("training.cli", "explore a labelled dataset (class balance, lengths, word clouds)"),
    "tune": ("training.cli", "search training hyperparameters with Optuna"),
    "predict": ("model.cli", "score texts or a CSV file with a model"),
    "worker": ("stream.worker.cli", "run the Faust stream worker that scores the tweets topic"),
    "produce": ("stream.feeders.produce_cli", "send texts or JSON lines to the tweets topic"),
    "replay": ("stream.feeders.replay_cli", "replay a labelled dataset into the tweets topic at a pace"),
    "dashboard": ("dashboard.cli", "run the live Streamlit dashboard"),
    "deploy": (
        "stream.deployment.cli",
        "ship a model bundle into the running stream (or roll back, shadow, promote)",
    ),
    "sink": ("stream.sink.cli", "write the scored topic to hourly Parquet files (exactly once)"),
    "monitor": ("stream.monitor.cli", "watch sentiment-stats for shifts and publish sentiment-alerts"),
    "dlq": ("stream.feeders.dlq_cli", "replay chosen dead letters into the input topic, each at most once"),
    "tail": ("stream.feeders.tail_cli", "print a topic's records as they arrive (scored, dlq, alerts, ...)"),
    "demo": ("infra.demo", "start broker, worker, replay, sink, monitor and dashboard together"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The top-level parser; only `command`'s arguments are loaded (lazily, from its module)."""
    # No abbreviations: `--sasl-password SECRET` must be refused, not taken for `--sasl-password-file`.
    parser = argparse.ArgumentParser(
        prog="sentistream",
        description="Streaming sentiment processor: train offline, score a live Kafka stream, watch it.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"sentistream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        # Also after the subcommand (`sentistream worker -v`); SUPPRESS keeps a `-v` given before it.
        sp.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at DEBUG level"
        )
        if name == command:
            add_arguments, run = _load(module_name)[name]
            add_arguments(sp)
            _note_json_logs_variable(sp)
            sp.set_defaults(run=run)
    return parser


def _note_json_logs_variable(parser: argparse.ArgumentParser) -> None:
    """A command's `--json-logs` flag also reads SENTISTREAM_JSON_LOGS; its help says so."""
    for action in parser._actions:
        if action.dest == "json_logs":
            action.help = f"{action.help} [env: {env_name(LogSettings, 'json_logs')}]"


def _json_logs_from_environment(args: argparse.Namespace) -> None:
    """`--json-logs` unset on the command line: SENTISTREAM_JSON_LOGS decides (a bad value is exit 2)."""
    if getattr(args, "json_logs", None) is False:
        args.json_logs = settings_from_args(LogSettings, argparse.Namespace()).json_logs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentistream` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _json_logs_from_environment(args)
        return int(args.run(args) or 0)
    except SentistreamError as exc:
        print(f"sentistream {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sentistream {args.command}: interrupted", file=sys.stderr)
        return 130


def _load(module_name: str) -> dict:
    return importlib.import_module(module_name).COMMANDS


if __name__ == "__main__":
    sys.exit(main())
