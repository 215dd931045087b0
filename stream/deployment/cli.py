"""`sentistream deploy`: ship a model bundle into the running stream, roll it back, shadow it, promote
it, or canary it (`--canary SHARE`: stream/deployment/canary.py serves it on a share of the partitions
and decides from its gates).

Every action first checks that the bundle it would serve loads and scores (the same check workers
make), and publishes nothing when it does not (exit 2). `--signing-key KEY.pem` signs a local
bundle (model/signing.py) before it is checked, so workers given the public key (--trusted-key)
serve it; --rollback and --promote re-check the recorded checksum, so what they republish is
byte for byte what was deployed (and signed) before. Workers follow the control topic and switch
between two batches (stream/worker/serving.py); see docs/ARCHITECTURE.md, "Model lifecycle".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from pathlib import Path

from pydantic import ValidationError

from model.settings import ModelSettings
from sentistream.errors import SentistreamError, UsageError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream import control
from stream.bundles import fetch, is_remote, load_verified, local_path, new_deployment
from stream.control import read_deployments
from stream.deployment import canary as canary_flow
from stream.events import Canary, Gates, ModelRef
from stream.settings import CONNECTION_FLAGS, KafkaSettings, ReplicationSettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `deploy` flags."""

    parser.add_argument(
        "bundle", nargs="?", help="model bundle: a directory, or any URI fsspec reads (s3://...)"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--rollback", action="store_true", help="serve the champion before the current one again"
    )
    action.add_argument("--promote", action="store_true", help="make the shadow challenger the champion")
    action.add_argument(
        "--shadow", action="store_true", help="deploy BUNDLE as a challenger scored beside the champion"
    )
    action.add_argument("--clear-shadow", action="store_true", help="stop shadow scoring")
    action.add_argument(
        "--show", action="store_true", help="print the deployments (and a canary's gates) as JSON"
    )
    action.add_argument(
        "--canary",
        type=float,
        metavar="SHARE",
        help="serve BUNDLE on the first ceil(SHARE x N) input partitions (at least 1, never all), shadow the "
        "champion with it on the rest, and wait: passing every gate promotes it, failing one rolls it "
        "back (exit 1); --rollback / --promote end it by hand. e.g. 0.1",
    )
    gates = parser.add_argument_group(
        "canary gates (from sentiment-stats; a gate decides once it has --gate-min-events events)"
    )
    defaults = Gates()
    for flag, field, kind, text in GATE_FLAGS:
        gates.add_argument(
            flag, dest=f"gate_{field}", type=kind, default=None, metavar="N", help=text.format(defaults)
        )
    parser.add_argument(
        "--signing-key",
        type=Path,
        metavar="KEY.pem",
        help="EC P-256 private key (openssl ecparam -name prime256v1 -genkey): sign BUNDLE (writes "
        "model.sig into it) so workers with the matching --trusted-key serve it",
    )
    add_settings_arguments(parser, KafkaSettings, [*CONNECTION_FLAGS, "models_topic", "topic", "stats_topic"])
    # The control topic is created by whoever first needs it, deploy or a worker: the same replicas.
    add_settings_arguments(parser, ReplicationSettings)
    add_settings_arguments(parser, ModelSettings, ["backend"])


GATE_FLAGS = [
    ("--gate-agreement", "agreement", float,
     "least share of the champion's events the candidate labels the same (default {0.agreement})"),
    ("--gate-accuracy-drop", "accuracy_drop", float,
     "most the candidate's label-free estimated accuracy may fall below the champion's (default {0.accuracy_drop})"),
    ("--gate-latency-p99-ms", "latency_p99_ms", float,
     "highest p99 latency, input to score, of the candidate's events (default {0.latency_p99_ms:.0f})"),
    ("--gate-dead-letter-rate", "dead_letter_rate", float,
     "highest share of the candidate's inputs dead-lettered at inference (default {0.dead_letter_rate})"),
    ("--gate-min-events", "min_events", int,
     "events each gate needs before it decides (default {0.min_events})"),
    ("--gate-timeout-s", "timeout_s", float,
     "roll back a canary whose gates have not decided after this long (default {0.timeout_s:.0f})"),
]  # fmt: skip


def gates_of(args: argparse.Namespace) -> Gates:
    """The gates the flags ask for (defaults where not given); UsageError for a value out of range."""
    given = {
        field: v for _, field, _, _ in GATE_FLAGS if (v := getattr(args, f"gate_{field}", None)) is not None
    }
    try:
        return Gates(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--gate-" + str(error["loc"][0]).replace("_", "-")
        raise UsageError(f"{flag}: {error['msg']}") from None


def run(args: argparse.Namespace) -> int:
    """Check, then publish; prints one line saying what the workers will serve."""

    kafka = settings_from_args(KafkaSettings, args)
    replication = settings_from_args(ReplicationSettings, args).replication_factor
    model_settings = settings_from_args(ModelSettings, args, device="cpu")
    wants_bundle = not (args.rollback or args.promote or args.clear_shadow or args.show)
    if wants_bundle != bool(args.bundle):
        raise UsageError(
            "give a BUNDLE to deploy (optionally with --shadow or --canary SHARE), or one of --rollback, --promote, "
            "--clear-shadow, --show without a bundle"
        )
    if args.canary is not None and not 0.0 < args.canary < 1.0:
        raise UsageError(
            f"--canary {args.canary}: give the share of input partitions the candidate serves, between 0 "
            "and 1 exclusive (0.1 serves it on the first tenth, at least one partition)"
        )
    gate_flags = [
        flag for flag, field, _, _ in GATE_FLAGS if getattr(args, f"gate_{field}", None) is not None
    ]
    if gate_flags and args.canary is None:
        raise UsageError(f"{gate_flags[0]} sets a gate of --canary; add --canary SHARE or drop it")
    args.gates = gates_of(args) if args.canary is not None else None  # out-of-range values: exit 2 now
    if args.signing_key is not None and not args.bundle:
        raise UsageError(
            "--signing-key signs a BUNDLE; --rollback and --promote republish signed bundles as they are"
        )
    if args.signing_key is not None and is_remote(args.bundle):
        raise UsageError(
            "--signing-key signs a local bundle directory; sign it before uploading "
            "(sentistream deploy --signing-key on the directory, or export --signing-key) and deploy the URI"
        )
    if args.bundle and not is_remote(args.bundle) and not local_path(args.bundle).expanduser().is_dir():
        raise UsageError(
            f"no such bundle directory: {args.bundle}; give the folder `sentistream train` or `export` wrote, "
            "or a remote URI (s3://, gs://, https://...)"
        )
    if not kafka.reachable():
        raise SentistreamError(kafka.unreachable())
    return asyncio.run(_run(args, kafka, model_settings, replication))


async def _run(args: argparse.Namespace, kafka, model_settings, replication: int) -> int:

    async def publish(role, deployment) -> int:
        return await control.publish(kafka, role, deployment, replication=replication)

    current, _ = await read_deployments(kafka)
    champion, challenger = current.get("champion"), current.get("challenger")
    canary = current.get("canary")
    running = canary if isinstance(canary, Canary) and canary.running else None
    if args.show:
        shown = {role: d.model_dump(mode="json") for role, d in current.items()}
        if running is not None:  # an ended canary's record carries its decision and gates
            shown["canary_gates"] = await canary_flow.gate_state(kafka, running)
        print(json.dumps(shown, indent=2))
        return 0
    if running is not None and (args.rollback or args.promote):
        decision = "rollback" if args.rollback else "promote"
        done = "rolled back" if args.rollback else "promoted"
        ended = await canary_flow.decide(
            kafka, running, decision, f"{done} by hand (sentistream deploy --{decision})"
        )
        return canary_flow.report(ended)
    if running is not None and args.canary is None:
        raise UsageError(
            f"the canary of {running.model_version} is running; let its gates decide, or end it with "
            "--promote or --rollback first"
        )
    if args.canary is not None:
        return await _canary(args, kafka, model_settings, champion, challenger, running, replication)
    if args.clear_shadow:
        if challenger is None:
            raise UsageError("there is no shadow challenger to clear")
        await publish("challenger", None)
        print(f"cleared the shadow challenger {challenger.model_version}")
        return 0
    if args.rollback:
        if champion is None or not champion.history:
            raise UsageError("nothing to roll back to: no earlier champion was deployed")
        earlier = champion.history[0]
        deployment = _pinned(earlier, model_settings, champion.history[1:])
        await publish("champion", deployment)
        print(f"rolled back to {deployment.model_version} (was {champion.model_version})")
        return 0
    if args.promote:
        if challenger is None:
            raise UsageError("there is no shadow challenger to promote; deploy one with --shadow first")
        deployment = _pinned(challenger, model_settings, _history(champion))
        await publish("champion", deployment)
        await publish("challenger", None)
        print(f"promoted {deployment.model_version} to champion (was {_name(champion)})")
        return 0
    uri = _absolute(args.bundle)
    if args.signing_key is not None:
        from model.signing import sign_bundle

        sign_bundle(local_path(uri), args.signing_key.expanduser())
    if args.shadow:
        deployment = _checked(uri, model_settings, [])
        await publish("challenger", deployment)
        print(f"shadow-scoring {deployment.model_version} beside {_name(champion)}")
        return 0
    deployment = _checked(uri, model_settings, _history(champion))
    if champion is not None and champion.checksum == deployment.checksum:
        print(f"{deployment.model_version} is already the champion; nothing published")
        return 0
    await publish("champion", deployment)
    print(
        f"deployed {deployment.model_version} as champion (was {_name(champion)}); workers switch between batches"
    )
    return 0


async def _canary(args, kafka, model_settings, champion, challenger, running, replication: int) -> int:
    """Start (or resume watching) a canary of BUNDLE and wait for its gates."""
    if challenger is not None:
        raise UsageError(
            f"a shadow challenger ({challenger.model_version}) is deployed and a canary shadows the champion "
            "itself: clear it first (sentistream deploy --clear-shadow)"
        )
    # Cheap refusals first: a topic that cannot carry a canary fails before the bundle is loaded.
    partitions = (
        await canary_flow.partitions_for(kafka, args.canary) if running is None else running.partitions
    )
    if args.signing_key is not None:
        from model.signing import sign_bundle

        sign_bundle(local_path(_absolute(args.bundle)), args.signing_key.expanduser())
    deployment = _checked(_absolute(args.bundle), model_settings, [])
    if champion is not None and champion.checksum == deployment.checksum:
        print(f"{deployment.model_version} is already the champion; nothing published")
        return 0
    if running is not None and running.checksum != deployment.checksum:
        raise UsageError(
            f"the canary of {running.model_version} is running; let its gates decide, or end it with "
            "--promote or --rollback first"
        )
    if running is not None:
        canary = running
        print(
            f"resuming the watch of the canary {canary.model_version} (started {canary.deployed_at:%H:%M:%S} UTC)"
        )
    else:
        await control.ensure_models_topic(kafka, replication=replication)  # the replicas asked for
        canary = await canary_flow.start(kafka, deployment, args.canary, partitions, args.gates)
        print(
            f"canary {canary.model_version} serves partitions {canary.partitions} of {canary.topic}, "
            f"{_name(champion)} the rest; waiting for its gates (Ctrl-C leaves it running)",
            flush=True,
        )
    return await canary_flow.run(kafka, canary)


def _pinned(ref: ModelRef, model_settings, history):  # -> Deployment
    """The record of an earlier deployment again, once its files still match its recorded checksum
    (whatever sits at its URI now is not trusted: it was never shadow-scored or signed)."""
    return _checked(ref.uri, model_settings, history, expected=ref.checksum)


def _checked(uri: str, model_settings, history, expected: str | None = None):  # -> Deployment
    """The deployment record of the bundle at `uri`, once it loaded and scored the smoke batch (and,
    with `expected`, once its files have that checksum)."""

    with tempfile.TemporaryDirectory(prefix="sentistream-deploy-") as cache:
        path = fetch(uri, Path(cache), expected)
        engine = load_verified(path, model_settings)
        try:
            return new_deployment(uri, path, engine, history)
        finally:
            engine.close()


def _history(champion) -> list:
    return [champion.ref(), *champion.history] if champion is not None else []


def _name(deployment) -> str:
    return deployment.model_version if deployment is not None else "each worker's --model"


def _absolute(bundle: str) -> str:
    """A local bundle as an absolute path (workers do not share the deployer's working directory)."""

    return bundle if is_remote(bundle) else str(local_path(bundle).resolve())


COMMANDS = {"deploy": (add_arguments, run)}
