"""`sentistream kafka start|stop|status`: the local broker from the command line."""

from __future__ import annotations

import argparse

from infra.broker import BrokerSettings, LocalBroker
from sentistream.settings import add_settings_arguments, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"], help="what to do with the broker")
    add_settings_arguments(parser, BrokerSettings, ["port", "data_dir", "partitions", "heap"])


def run(args: argparse.Namespace) -> int:
    broker = LocalBroker(settings_from_args(BrokerSettings, args))
    return {"start": _start, "stop": _stop, "status": _status}[args.action](broker)


def _start(broker) -> int:
    already, seconds = broker.start()
    if already:
        print(f"Kafka is already running at {broker.address} (pid {broker.status().pid}); nothing to do.")
    else:
        print(f"Kafka is up at {broker.address} (bootstrap: {broker.url}) after {seconds:.1f}s.")
        print(f"  data dir: {broker.data_dir}\n  log:      {broker.log_file}")
    return 0


def _stop(broker) -> int:
    if broker.stop():
        print(f"Kafka at {broker.address} stopped.")
    else:
        print(f"No Kafka broker is running for {broker.data_dir}; nothing to stop.")
    return 0


def _status(broker) -> int:
    st = broker.status()
    state = f"running (pid {st.pid})" if st.running else "stopped"
    print(f"state:    {state}\naddress:  {st.address}\ndata dir: {st.data_dir}\nlog file: {st.log_file}")
    return 0


COMMANDS = {"kafka": (add_arguments, run)}
