"""`deploy BUNDLE --canary SHARE`: serve a candidate on a share of the partitions until its gates decide.

Who decides: this command. It publishes the `canary` record, stays running on `watch` (the gates
over `sentiment-stats`, stream/deployment/gates.py) and publishes the verdict: promoted (a new
`champion` record first, so workers switch the canary's engine in without a gap) or rolled back,
with the reason in the record. One evaluator, so workers never race each other to a decision. If
this command dies, the canary keeps serving its share and nothing is lost: `deploy --show` prints
the gates' state from the same windows, and running the same `deploy BUNDLE --canary` again resumes
the watch (and publishes the verdict the gates already reached); `--gate-timeout-s` rolls back a
canary that never decides. `deploy --rollback` / `--promote` end a running canary by hand.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Literal

from sentistream.errors import SentistreamError, UsageError
from stream.bundles import deployer
from stream.control import publish, read_deployments
from stream.deployment.gates import canary_partitions, evaluate
from stream.deployment.watch import partition_count, read_windows, watch
from stream.events import HISTORY_KEPT, Canary, CanaryDecision, Deployment, Gates, Verdict
from stream.settings import KafkaSettings

PROGRESS_EVERY_S = 10.0  # how often a waiting canary says where its gates stand (stderr)


async def partitions_for(kafka: KafkaSettings, share: float) -> list[int]:
    """The input partitions a canary of `share` would serve; UsageError when there can be no canary."""
    count = await partition_count(kafka, kafka.topic)
    if not count:
        raise UsageError(
            f"the input topic {kafka.topic} does not exist; start a worker first (it creates it) or fix --topic"
        )
    try:
        return canary_partitions(share, count, f"the input topic {kafka.topic}")
    except ValueError as exc:
        raise UsageError(f"{exc}; add partitions to it or deploy without --canary") from None


async def start(
    kafka: KafkaSettings, deployment: Deployment, share: float, partitions: list[int], gates: Gates
) -> Canary:
    """Publish a running canary of `deployment` on `partitions` (`partitions_for`)."""
    canary = Canary(
        **deployment.model_dump(exclude={"history"}),
        share=share,
        topic=kafka.topic,
        partitions=partitions,
        gates=gates,
    )
    await publish(kafka, "canary", canary)
    return canary


async def run(kafka: KafkaSettings, canary: Canary) -> int:
    """Watch `canary` until its gates decide, publish the verdict, say it; 0 promoted, 1 rolled back."""
    last = [0.0]

    def progress(verdict: Verdict) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            print(f"canary {canary.model_version}: {verdict.reason}", file=sys.stderr, flush=True)

    async def still_running() -> bool:
        latest = _this(canary, (await read_deployments(kafka))[0])
        return latest is not None and latest.running

    verdict = await watch(
        kafka, canary.gates, canary.model_version, canary.deployed_at, still_running, progress
    )
    if verdict is not None and verdict.decision != "pending":
        decided = await decide(kafka, canary, verdict.decision, verdict.reason, verdict)
    else:  # ended by hand or by another watcher meanwhile
        decided = _this(canary, (await read_deployments(kafka))[0])
    return report(decided)


async def decide(
    kafka: KafkaSettings,
    canary: Canary,
    decision: Literal["promote", "rollback"],
    reason: str,
    verdict: Verdict | None = None,
) -> Canary | None:
    """Publish the end of a running `canary`: promoted (its champion record first) or rolled back.
    Returns its record as it now stands: an earlier decision stands (a second watcher, or a hand,
    was first); None when the record no longer names this canary."""
    current = (await read_deployments(kafka))[0]
    latest = _this(canary, current)
    if latest is None or not latest.running:
        return latest
    now, by = datetime.now(UTC), deployer()
    ended = CanaryDecision(
        decision=decision,
        reason=reason,
        gates=verdict.gates if verdict is not None else [],
        decided_by=by,
        decided_at=now,
    )
    if decision == "promote":
        champion = current.get("champion")
        history = [champion.ref(), *champion.history] if champion is not None else []
        promoted = Deployment(
            **canary.model_dump(
                include=set(Deployment.model_fields) - {"history", "deployed_at", "deployed_by"}
            ),
            deployed_at=now,
            deployed_by=by,
            history=history[:HISTORY_KEPT],
        )
        await publish(kafka, "champion", promoted)  # first: workers take the canary's engine over
    status = "promoted" if decision == "promote" else "rolled_back"
    final = canary.model_copy(update={"status": status, "decision": ended})
    await publish(kafka, "canary", final)
    return final


def report(canary: Canary | None) -> int:
    """Say how `canary` ended: one line on stdout for a promotion (0), an error line for a rollback (1)."""
    if canary is None or canary.decision is None:
        raise SentistreamError(
            "the canary's record was replaced before it was decided; see `sentistream deploy --show`"
        )
    if canary.decision.decision == "promote":
        print(f"promoted {canary.model_version} to champion: {canary.decision.reason}")
        return 0
    raise SentistreamError(f"rolled back the canary {canary.model_version}: {canary.decision.reason}")


async def gate_state(kafka: KafkaSettings, canary: Canary) -> dict:
    """What `deploy --show` says of a running canary's gates: the verdict of the windows published so
    far and, when it is not pending, how to publish it (an ended canary's record says how it ended)."""
    windows = await read_windows(kafka, canary.deployed_at)
    verdict = evaluate(canary.gates, canary.model_version, windows, canary.deployed_at, datetime.now(UTC))
    shown = verdict.model_dump(mode="json")
    if verdict.decision != "pending":
        shown["next"] = (
            f"no watcher has published this {verdict.decision}: run `sentistream deploy {canary.uri} --canary "
            f"{canary.share}` to resume the watch (it publishes it), or end it with --promote or --rollback"
        )
    return shown


def _this(canary: Canary, current: dict) -> Canary | None:
    """The control topic's `canary` record when it is still this canary (same bundle, same start)."""
    latest = current.get("canary")
    if isinstance(latest, Canary) and (latest.checksum, latest.deployed_at) == (
        canary.checksum,
        canary.deployed_at,
    ):
        return latest
    return None
