"""The event schemas: the single place each topic's message shape is defined.

The producer, the worker, the dashboard and the tests all build and parse messages through these
models, so a field renamed here is renamed everywhere (see docs/ARCHITECTURE.md, "Topics").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from model.calibration import ExpectedConfusion
from model.cleaning import nothing_visible

_TWITTER_KEYS = frozenset({"data", "full_text", "extended_tweet", "id_str", "user", "author_id"})
# v1.1 (and Sentiment140) times: "Wed Oct 10 20:19:24 +0000 2018".
TWITTER_TIME = "%a %b %d %H:%M:%S %z %Y"
# What Kafka adds to one record's key + value in a record batch, bounded from above: the batch header
# (61 bytes) and the record's own varints (length, offset and timestamp deltas, key and value lengths:
# about 25). No producer here adds record headers. The margin is kept generous on purpose: a message is
# refused when key + value + this exceeds a size limit, so every producer of the project (`produce`,
# `replay`, the worker's outputs) refuses or cuts a message before the broker would, never after.
RECORD_OVERHEAD_BYTES = 512


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the events use."""
    return datetime.now(UTC)


def new_id() -> str:
    """An id for an input that arrived without one."""
    return uuid.uuid4().hex


class Tweet(BaseModel):
    """A raw input on the `tweets` topic. Unknown fields are kept and carried through."""

    model_config = ConfigDict(extra="allow")

    text: StrictStr = Field(description="the text to score (required, non-empty)")
    id: str | None = Field(default=None, description="producer's id; also the message key")
    created_at: datetime | None = Field(default=None, description="ISO-8601 creation time")
    user: str | None = None
    lang: str | None = None
    source: str | None = None
    true_label: str | None = Field(default=None, description="known label (replayed datasets)")

    @model_validator(mode="before")
    @classmethod
    def _from_twitter_api(cls, data: Any) -> Any:
        return from_twitter_api(data) if isinstance(data, dict) else data

    @field_validator("text")
    @classmethod
    def _usable_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only; send at least one visible character")
        if reason := nothing_visible(value):
            raise ValueError(reason)
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # Numeric ids (as many tweet exports have) are accepted and carried as strings.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("created_at", mode="before")
    @classmethod
    def _twitter_time(cls, value: object) -> object:
        if isinstance(value, str) and value[:1].isalpha():
            try:
                return datetime.strptime(value, TWITTER_TIME)
            except ValueError:
                raise ValueError(
                    "not an ISO-8601 time nor Twitter's 'Wed Oct 10 20:19:24 +0000 2018'"
                ) from None
        return value

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # a time without an offset is taken as UTC
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # year 1 at +01:00 has no UTC form; a ValueError becomes a dead letter
            raise ValueError("time is out of range once converted to UTC") from None


def from_twitter_api(data: dict[str, Any]) -> dict[str, Any]:
    """A Twitter API v1.1 or v2 tweet mapped onto the `tweets` fields; other mappings unchanged.

    v2 (`{"data": {...}, "includes": {...}}`) is unwrapped; `full_text` (v1.1 extended mode) is the
    text; `id_str` is the id (exact, where a JSON number may have been rounded); a v1.1 `user`
    object gives its `screen_name` as `user` and is carried whole as `user_profile`; a v2
    `author_id` gives the author's username (from `includes.users`) or the id itself.
    """
    if _TWITTER_KEYS.isdisjoint(data):  # the `tweets` schema already: most messages
        return data
    inner = data.get("data")
    if "text" not in data and isinstance(inner, dict) and "text" in inner:
        data = {k: v for k, v in data.items() if k != "data"} | inner
    data = dict(data)  # never change the caller's mapping
    extended = data.get("extended_tweet")
    if data.get("truncated") is True and isinstance(extended, dict) and "full_text" in extended:
        data["text"] = extended["full_text"]
    elif "text" not in data and "full_text" in data:
        data["text"] = data.pop("full_text")
    if isinstance(data.get("id_str"), str) and (data.get("id") is None or isinstance(data["id"], int)):
        data["id"] = data["id_str"]
    user = data.get("user")
    if isinstance(user, dict):
        data["user_profile"] = user
        data["user"] = _text_or_none(user.get("screen_name") or user.get("username"))
    elif user is None and isinstance(data.get("author_id"), str | int):
        data["user"] = _author_name(data)
    return data


def _author_name(data: dict[str, Any]) -> str | None:
    author = str(data["author_id"])
    includes = data.get("includes")
    users = includes.get("users") if isinstance(includes, dict) else None
    for user in users if isinstance(users, list) else []:
        if isinstance(user, dict) and str(user.get("id")) == author and isinstance(user.get("username"), str):
            return user["username"]
    return author


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class ScoredTweet(Tweet):
    """One event on `tweets-scored` per accepted input: the input plus the model's verdict."""

    id: str  # type: ignore[assignment]  # always set on output: generated when the input had none
    label: str = Field(description="the most probable of the bundle's labels")
    score: float = Field(ge=0.0, le=1.0, description="probability of `label`")
    scores: dict[str, float] = Field(description="label -> probability")
    model: str = Field(description="name@version of the model that scored it")
    model_version: str = Field(
        "",
        description="the exact model: name@version+first 12 hex digits of the bundle's sha256 "
        "(vader@3.3.2 for the lexicon); empty only in events written before versions existed",
    )
    scored_at: datetime
    latency_ms: float = Field(description="broker timestamp of the input -> scoring, in ms")
    truncated: bool = Field(default=False, description="text was cut to the cleaning cap")

    @field_validator("text")
    @classmethod
    def _usable_text(cls, value: str) -> str:
        # Overrides the input check: the worker accepted this text, and cutting it to fit Kafka may
        # leave a prefix that is blank; refusing the output then would lose the message.
        return value


Stage = Literal["decode", "validate", "inference"]


class DeadLetter(BaseModel):
    """One event on `tweets-dlq` per rejected input, with what to do about it."""

    original: str = Field(description="the input bytes: UTF-8 text, or base64 when not UTF-8")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    error: str = Field(description="a human-readable reason a person can act on")
    stage: Stage
    topic: str
    partition: int
    offset: int
    key: str | None = None
    failed_at: datetime = Field(default_factory=utcnow)


class ModelAccuracy(BaseModel):
    """How one model did on the labelled events of a window."""

    labelled: int = 0
    correct: int = 0


class EstimatedPerformance(BaseModel):
    """The sums behind a label-free accuracy estimate (`model.calibration`): add them up over workers
    and windows, then estimate. With `cells` and `shares` (bundles trained since the estimate allows
    for other class shares) the estimate runs on the cells; without them it is CBPE from `support` and
    `correct`. Meaningful for a calibrated bundle; the VADER lexicon's probabilities are not calibrated."""

    events: int = Field(0, description="events whose probabilities were counted")
    support: dict[str, float] = Field(
        default_factory=dict,
        description="label -> expected number of events truly of it (sum of its probability)",
    )
    correct: dict[str, float] = Field(
        default_factory=dict,
        description="predicted label -> expected number of its events that are right (sum of its probability)",
    )
    cells: dict[str, int] = Field(
        default_factory=dict,
        description="events per cell `predicted|i,j,...` (the bundle's re-calibrated probabilities x 40, "
        "rounded); cells add up like the sums",
    )
    shares: dict[str, float] | None = Field(
        None, description="label -> its share of the bundle's validation split (where the estimate starts)"
    )

    def sums(self) -> ExpectedConfusion:
        """These sums, ready to merge with others and estimate (`ExpectedConfusion.accuracy`)."""
        return ExpectedConfusion(
            self.events, dict(self.support), dict(self.correct), dict(self.cells), self.shares
        )


class ShadowStats(BaseModel):
    """A challenger scored off the critical path on the same batches as the champion, in one window."""

    champion: str = Field(description="model_version of the model whose events were published")
    challenger: str = Field(description="model_version of the shadow model")
    compared: int = Field(0, description="events both models scored")
    agreed: int = Field(0, description="of those, events where both gave the same label")
    dropped: int = Field(0, description="events the challenger skipped because it could not keep up")
    confusion: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="champion label -> challenger label -> events"
    )
    challenger_accuracy: ModelAccuracy = Field(default_factory=ModelAccuracy)


class SentimentStats(BaseModel):
    """One event on `sentiment-stats` per closed tumbling window per worker."""

    window_start: datetime
    window_end: datetime
    worker: str = Field(description="which worker (host:pid) counted this window")
    count: int
    counts: dict[str, int] = Field(description="label -> number of events")
    mean_score: float
    events_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    dead_lettered: int = 0
    by_model: dict[str, int] = Field(
        default_factory=dict, description="model_version -> events it scored in this window"
    )
    accuracy: dict[str, ModelAccuracy] = Field(
        default_factory=dict,
        description="model_version -> its hits on events that carry a true_label (replayed datasets)",
    )
    shadow: ShadowStats | None = Field(None, description="champion vs challenger, when a shadow runs")
    model_error: str | None = Field(
        None, description="the last deployment this worker rejected, and why (it kept its model)"
    )
    estimated_accuracy: float | None = Field(
        None,
        description="accuracy estimated from the calibrated probabilities alone, no labels (`model.calibration`: "
        "under a change of class shares where the bundle has the fit for it, else CBPE)",
    )
    estimated_macro_recall: float | None = Field(
        None, description="macro-recall estimated the same way (mean over labels of expected recall)"
    )
    estimated: dict[str, EstimatedPerformance] = Field(
        default_factory=dict,
        description="model_version -> the sums behind the estimate, which merge by adding",
    )
    latency_p99_by_model: dict[str, float] = Field(
        default_factory=dict,
        description="model_version -> p99 latency of the events it scored in this window (a canary's "
        "latency gate; the window's own percentiles mix every model)",
    )
    dead_lettered_by_model: dict[str, int] = Field(
        default_factory=dict,
        description="model_version -> inputs dead-lettered at the `inference` stage of batches it "
        "scored (the model's own failures; decode and validate failures are the input's)",
    )


# The control topic (`sentistream-models`, stream/control.py): key = role, value = `Deployment` (a
# `Canary` under the key `canary`).
Role = Literal["champion", "challenger", "canary"]
ROLES: tuple[Role, ...] = ("champion", "challenger", "canary")
HISTORY_KEPT = 10  # champions a deployment remembers for --rollback
# Where a deployed bundle may live: a local path (a mounted volume) or one of these stores. Anything
# else fsspec could open (ftp, sftp, ssh, github, a chained "zip::" URL...) is refused in the record.
URI_SCHEMES = frozenset({"", "file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf", "https"})


def _known_uri(uri: str) -> str:
    if "\0" in uri or "::" in uri or any(ord(c) < 32 for c in uri):
        raise ValueError("the uri holds control characters or a chained fsspec URL")
    scheme = urlsplit(uri).scheme.lower()
    if len(scheme) != 1 and scheme not in URI_SCHEMES:  # one letter: a Windows drive
        raise ValueError(f"the uri scheme {scheme!r} is not one of {sorted(URI_SCHEMES - {''})} or a path")
    return uri


Uri = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_known_uri)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ModelRef(BaseModel):
    """One deployed bundle: where it is, exactly what it is, and who deployed it when.

    Validated as hostile input (issue #24): whoever can write to the control topic controls these
    fields, so the checksum is 64 lower-case hex digits (it names a cache directory), times carry a
    time zone, the URI is a path or a known store, and every string has a length cap.
    """

    model_config = ConfigDict(extra="ignore")

    uri: Uri = Field(description="a local path or a URI of a known store (URI_SCHEMES)")
    model: Name = Field(description="name@version")
    model_version: Name = Field(description="name@version+checksum prefix, as in scored events")
    checksum: Sha256 = Field(description="sha256 of the bundle's files (model.bundle.checksum)")
    deployed_by: Name
    deployed_at: AwareDatetime


class Deployment(ModelRef):
    """The value of a `champion` or `challenger` record on the control topic."""

    history: list[ModelRef] = Field(
        default_factory=list,
        max_length=HISTORY_KEPT,
        description="earlier champions, newest first (for --rollback)",
    )

    def ref(self) -> ModelRef:
        """This deployment without its history."""
        return ModelRef(**self.model_dump(exclude={"history"}))


# A canary (`deploy --canary`, the `canary` key of the control topic): a candidate on some input
# partitions until its gates decide (the evaluator is stream/deployment/gates.py).

GateName = Literal["agreement", "estimated_accuracy", "latency_p99", "dead_letter_rate"]
Outcome = Literal["pending", "pass", "fail"]
Decision = Literal["pending", "promote", "rollback"]


class Gates(BaseModel):
    """What a canary must show before it is promoted (carried in its control-topic record)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    agreement: float = Field(0.9, ge=0.0, le=1.0, description="least share of shadow labels that agree")
    accuracy_drop: float = Field(
        0.05, ge=0.0, le=1.0, description="most the estimated accuracy may fall below the champion's"
    )
    latency_p99_ms: float = Field(2000.0, gt=0.0, le=3_600_000.0, description="highest p99 latency, ms")
    dead_letter_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="highest share of the candidate's inputs dead-lettered at inference"
    )
    min_events: int = Field(500, ge=1, le=1_000_000_000, description="events each gate needs to decide")
    timeout_s: float = Field(1800.0, gt=0.0, le=30 * 86400.0, description="rolled back if undecided by then")


class GateResult(BaseModel):
    """One gate over the windows seen so far: the measured value against its threshold."""

    gate: GateName
    outcome: Outcome
    value: float | None = Field(description="what was measured (None: nothing yet)")
    threshold: float
    bound: Literal["min", "max"] = Field(description="min: value must be >= threshold; max: <=")
    events: int = Field(description="events behind `value`")
    min_events: int

    def describe(self) -> str:
        """One phrase: `agreement 0.334 < 0.900 over 612 events`, or what it still waits for."""
        if self.outcome == "pending" or self.value is None:
            return f"{self.gate} waits for events: {self.events:,} of {self.min_events:,}"
        sign = {("min", "pass"): ">=", ("min", "fail"): "<", ("max", "pass"): "<=", ("max", "fail"): ">"}
        shown = _shown(self.gate)
        return (
            f"{self.gate} {shown(self.value)} {sign[(self.bound, self.outcome)]} {shown(self.threshold)} "
            f"over {self.events:,} events"
        )


class Verdict(BaseModel):
    """What the gates decide, why, and every gate's state."""

    decision: Decision
    reason: str = Field(max_length=2000)
    gates: list[GateResult] = Field(default_factory=list, max_length=8)


def _shown(gate: GateName):
    if gate == "latency_p99":
        return lambda v: f"{v:,.0f} ms"
    return lambda v: f"{v:.3f}"


CanaryStatus = Literal["running", "promoted", "rolled_back"]


class CanaryDecision(BaseModel):
    """How a canary ended: the verdict, who reached it and when."""

    model_config = ConfigDict(extra="ignore")

    decision: Literal["promote", "rollback"]
    reason: str = Field(
        max_length=2000, description="which gate, the measured value vs its threshold, events"
    )
    gates: list[GateResult] = Field(default_factory=list, max_length=8)
    decided_by: Name
    decided_at: AwareDatetime


class Canary(Deployment):
    """The value of the `canary` record: a candidate served on some input partitions until its gates
    decide. `status` running: every worker scores `partitions` of `topic` with it and shadow-scores
    the rest; promoted or rolled_back: it serves nowhere, and `decision` says why."""

    share: float = Field(gt=0.0, lt=1.0, description="the share of input partitions asked for")
    topic: Name = Field(description="the input topic `partitions` belong to")
    partitions: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(min_length=1, max_length=10_000)
    gates: Gates = Field(default_factory=Gates)
    status: CanaryStatus = "running"
    decision: CanaryDecision | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


# `sentiment-alerts` (stream/monitor/): one event per shift episode.


class Change(BaseModel):
    """One quantity that moved: a label's share, or the event count ("volume")."""

    what: str = Field(description="the label whose share moved, or 'volume'")
    baseline: float = Field(description="its rolling-baseline value (share 0..1, or events per window)")
    value: float = Field(description="its value in the window that raised the alert")
    change: float = Field(description="value - baseline")
    z: float = Field(description="standard errors away from the baseline")


class Example(BaseModel):
    """A recent scored tweet with the label that moved."""

    id: str
    text: str
    label: str


class Driver(BaseModel):
    """A word that pushed the model towards the label that rose, summed over the explained examples."""

    word: str = Field(max_length=100)
    weight: float = Field(description="summed attribution towards the label (probability points)")
    texts: int = Field(description="explained examples the word appears in")


class SentimentAlert(BaseModel):
    """One event on `sentiment-alerts` per shift episode: what moved, how much, since when."""

    alert_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["share", "volume", "stalled", "estimated_accuracy"]
    since: datetime = Field(description="start of the first window of the shift")
    window_start: datetime
    window_end: datetime
    events: int = Field(description="events in the window that raised it")
    changes: list[Change]
    summary: str = Field(description="one line a person can read")
    examples: list[Example] = Field(default_factory=list)
    drivers: list[Driver] = Field(
        default_factory=list,
        description="share alerts: the words that most drove the label that rose, in this window's "
        "examples (explained by a worker's POST /explain); empty when none was asked or it answered late",
    )
    drivers_note: str | None = Field(None, description="how the drivers were found, or why there are none")
    raised_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
