"""The canary gate evaluator: a pure function from `sentiment-stats` windows to promote, roll back or wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stream.deployment.gates import Gates, canary_partitions, evaluate
from stream.events import EstimatedPerformance, SentimentStats, ShadowStats

CHAMPION, CANDIDATE = "tiny@1+aaaaaaaaaaaa", "tiny@1+bbbbbbbbbbbb"
STARTED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GATES = Gates(agreement=0.9, accuracy_drop=0.05, latency_p99_ms=1000, dead_letter_rate=0.01, min_events=100)


def window(
    n: int = 0,
    worker: str = "w1",
    *,
    scored: int = 60,
    champion_scored: int = 60,
    compared: int = 60,
    agreed: int = 60,
    accuracy: float = 0.8,
    champion_accuracy: float = 0.8,
    p99: float = 200.0,
    dead: int = 0,
    since: datetime = STARTED,
    candidate: str = CANDIDATE,
    champion: str = CHAMPION,
) -> SentimentStats:
    """Window n (10 s each, from `since`) of one worker serving both the champion and the candidate."""
    start = since + timedelta(seconds=10 * n)
    return SentimentStats(
        window_start=start,
        window_end=start + timedelta(seconds=10),
        worker=worker,
        count=scored + champion_scored,
        counts={"positive": scored + champion_scored},
        mean_score=0.8,
        events_per_s=12.0,
        latency_p50_ms=50.0,
        latency_p95_ms=100.0,
        latency_p99_ms=150.0,
        dead_lettered=dead,
        by_model={candidate: scored, champion: champion_scored},
        shadow=ShadowStats(champion=champion, challenger=candidate, compared=compared, agreed=agreed),
        estimated={
            candidate: EstimatedPerformance(events=scored, correct={"positive": accuracy * scored}),
            champion: EstimatedPerformance(
                events=champion_scored, correct={"positive": champion_accuracy * champion_scored}
            ),
        },
        latency_p99_by_model={candidate: p99, champion: 150.0},
        dead_lettered_by_model={candidate: dead} if dead else {},
    )


def verdict(windows, now: datetime | None = None, gates: Gates = GATES):
    return evaluate(gates, CANDIDATE, windows, STARTED, now or STARTED + timedelta(minutes=5))


def gate(result, name: str):
    (found,) = [g for g in result.gates if g.gate == name]
    return found


def test_below_the_minimum_events_every_gate_waits_even_when_the_values_are_bad() -> None:
    # 60 events, 0 agreed, a slow and failing candidate: too little evidence to judge anything yet.
    result = verdict([window(compared=60, agreed=0, p99=9_000, dead=30, scored=60, accuracy=0.1)][:1])
    assert result.decision == "pending"
    assert {g.outcome for g in result.gates} == {"pending"}
    assert "agreement waits for events: 60 of 100" in result.reason


def test_all_gates_passing_with_enough_events_promotes() -> None:
    result = verdict([window(0), window(1)])
    assert result.decision == "promote"
    assert [g.outcome for g in result.gates] == ["pass"] * 4
    assert gate(result, "agreement").value == 1.0 and gate(result, "agreement").events == 120
    assert result.reason.startswith("all gates passed: agreement 1.000 >= 0.900 over 120 events")


def test_low_agreement_rolls_back_with_the_measured_value_the_threshold_and_the_events() -> None:
    result = verdict([window(0, agreed=20), window(1, agreed=20)])
    assert result.decision == "rollback"
    assert result.reason == "agreement 0.333 < 0.900 over 120 events"
    failed = gate(result, "agreement")
    assert (failed.outcome, failed.value, failed.threshold, failed.events) == ("fail", 40 / 120, 0.9, 120)


def test_agreement_counts_only_the_shadow_of_this_candidate() -> None:
    other = window(0, agreed=0)
    other.shadow = ShadowStats(champion=CHAMPION, challenger="someone@else", compared=500, agreed=0)
    result = verdict([other, window(1), window(2)])
    assert gate(result, "agreement").events == 120 and result.decision == "promote"


def test_an_estimated_accuracy_drop_beyond_the_allowed_one_rolls_back() -> None:
    result = verdict([window(0, accuracy=0.70), window(1, accuracy=0.70)])  # champion 0.80, allowed 0.75
    assert result.decision == "rollback"
    failed = gate(result, "estimated_accuracy")
    assert failed.value == pytest.approx(0.70) and failed.threshold == pytest.approx(0.75)
    assert result.reason == "estimated_accuracy 0.700 < 0.750 over 120 events"
    within = verdict([window(0, accuracy=0.76), window(1, accuracy=0.76)])
    assert within.decision == "promote"


def test_the_estimate_needs_events_on_both_sides() -> None:
    lonely = [window(n, champion_scored=0) for n in range(3)]
    for w in lonely:
        w.estimated.pop(CHAMPION)
    result = verdict(lonely)
    assert gate(result, "estimated_accuracy").outcome == "pending"
    assert result.decision == "pending"


def test_a_slow_candidate_rolls_back_on_its_own_p99_not_the_windows() -> None:
    result = verdict([window(0, p99=1500.0), window(1, p99=1500.0)])
    assert result.decision == "rollback"
    assert result.reason == "latency_p99 1,500 ms > 1,000 ms over 120 events"
    # Windows weighted by their events: 10 events at 5 s and 200 at 200 ms stay under a second.
    mixed = verdict([window(0, scored=10, p99=5000.0), window(1, scored=200, p99=200.0)])
    assert gate(mixed, "latency_p99").value == pytest.approx((10 * 5000 + 200 * 200) / 210)
    assert gate(mixed, "latency_p99").outcome == "pass"


def test_dead_letters_of_the_candidate_over_the_threshold_roll_back() -> None:
    result = verdict([window(0, dead=2), window(1, dead=1)])
    assert result.decision == "rollback"
    failed = gate(result, "dead_letter_rate")
    assert failed.value == pytest.approx(3 / 123) and failed.events == 123
    assert result.reason.startswith("dead_letter_rate 0.024 > 0.010 over 123 events")


def test_every_failing_gate_is_named_in_the_reason() -> None:
    result = verdict([window(n, agreed=0, p99=5000.0) for n in range(2)])
    assert result.decision == "rollback"
    assert (
        result.reason.startswith("agreement 0.000 < 0.900")
        and "latency_p99 5,000 ms > 1,000 ms" in result.reason
    )


def test_windows_before_the_start_and_repeated_windows_do_not_count() -> None:
    before = window(-1, agreed=0)  # ended exactly when the canary started: another deployment's shadow
    assert before.window_end == STARTED
    repeated = [window(0), window(0)]  # the same worker and window read twice
    result = verdict([before, *repeated])
    assert gate(result, "agreement").events == 60 and result.decision == "pending"
    two_workers = verdict([window(0, "w1"), window(0, "w2")])
    assert gate(two_workers, "agreement").events == 120 and two_workers.decision == "promote"


def test_undecided_at_the_timeout_rolls_back_and_says_what_was_missing() -> None:
    gates = GATES.model_copy(update={"timeout_s": 600})
    early = verdict([window(0)], now=STARTED + timedelta(seconds=599), gates=gates)
    assert early.decision == "pending"
    late = verdict([window(0)], now=STARTED + timedelta(seconds=600), gates=gates)
    assert late.decision == "rollback"
    assert late.reason.startswith("undecided after 600s (timeout): agreement waits for events: 60 of 100")
    # A failure already in the windows is the reason, not the timeout.
    failed = verdict(
        [window(0, agreed=0), window(1, agreed=0)], now=STARTED + timedelta(hours=1), gates=gates
    )
    assert failed.reason.startswith("agreement 0.000 < 0.900")


def test_windows_published_before_per_model_latency_existed_leave_that_gate_pending() -> None:
    old = window(0).model_dump(mode="json")
    old.pop("latency_p99_by_model")
    old.pop("dead_lettered_by_model")
    parsed = SentimentStats.model_validate(old)
    result = verdict([parsed, SentimentStats.model_validate({**old, "worker": "w2"})])
    assert gate(result, "latency_p99").outcome == "pending" and result.decision == "pending"


def test_the_verdict_round_trips_through_json() -> None:
    result = verdict([window(0, agreed=0), window(1, agreed=0)])
    again = type(result).model_validate_json(result.model_dump_json())
    assert again == result


@pytest.mark.parametrize(
    ("share", "partitions", "expected"),
    [(0.1, 4, [0]), (0.25, 4, [0]), (0.26, 4, [0, 1]), (0.5, 4, [0, 1]), (0.9, 4, [0, 1, 2]), (0.5, 2, [0])],
)
def test_canary_partitions_are_the_first_ceil_share_of_them_at_least_one_and_never_all(
    share: float, partitions: int, expected: list[int]
) -> None:
    assert canary_partitions(share, partitions) == expected


@pytest.mark.parametrize(
    ("share", "partitions", "message"),
    [(0.1, 1, "at least 2"), (0.0, 4, "between 0 and 1"), (1.0, 4, "between 0 and 1")],
)
def test_canary_partitions_refuse_what_cannot_be_a_canary(
    share: float, partitions: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        canary_partitions(share, partitions)


def test_gates_refuse_thresholds_out_of_range() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Gates(agreement=1.5)
    with pytest.raises(ValidationError):
        Gates(min_events=0)


def test_the_accuracy_gate_compares_the_estimates_under_shift_when_windows_carry_cells() -> None:
    from model.calibration import ExpectedConfusion
    from tests.model.test_estimate_under_shift import identity_shift
    from tests.stream.test_stats_estimate import airline_like_rows

    def sums_of(rows: list[dict[str, float]]) -> EstimatedPerformance:
        sums = ExpectedConfusion()
        for scores in rows:
            sums.add(scores, identity_shift())
        return EstimatedPerformance(
            events=sums.events,
            support=sums.support,
            correct=sums.correct,
            cells=sums.cells,
            shares=sums.shares,
        )

    rows = airline_like_rows(400, seed=3)
    windows = [window(0, scored=200, champion_scored=200)]
    windows[0].estimated = {CANDIDATE: sums_of(rows[:200]), CHAMPION: sums_of(rows[200:])}
    result = gate(verdict(windows), "estimated_accuracy")
    expected = windows[0].estimated[CANDIDATE].sums().accuracy
    cbpe = sum(windows[0].estimated[CANDIDATE].correct.values()) / 200
    assert result.value == pytest.approx(expected) and abs(expected - cbpe) > 0.01
    assert result.threshold == pytest.approx(windows[0].estimated[CHAMPION].sums().accuracy - 0.05)
