"""Why the mood moved: the words that most drove the label that rose, for a share alert.

The monitor keeps the latest scored tweets per label (stream/monitor/detector.py, `Examples`). When
a share alert names a label whose share rose, up to `explain_texts` of that label's latest tweets go
to one worker's POST /explain (the worker explains on its own low-priority thread, off the stream's
inference path, within its own time budget), and the word weights towards that label are summed
per word. The alert waits at most `explain_timeout_s` for the answer and goes without drivers (and
says why in `drivers_note`) when none comes: an explanation never holds an alert back for long and
never touches the stream. Alerts are raised once per episode, so this is at most one request per
episode.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.events import Driver, SentimentAlert
from stream.worker_api import Explained, ExplainResponse

log = logging.getLogger(__name__)

MAX_WORD = 40  # characters of a word shown in an alert


def risen_label(alert: SentimentAlert) -> str | None:
    """The label whose share rose the most, for a share alert; None otherwise."""
    if alert.kind != "share":
        return None
    risen = [c for c in alert.changes if c.what != "volume" and c.change > 0]
    return max(risen, key=lambda c: c.change).what if risen else None


def _word(token: str) -> str:
    """A token as a word to count: case-folded, stripped of surrounding punctuation."""
    word = token.strip().casefold().strip(".,;:!?\"'()[]{}«»“”‘’…-")
    return word[:MAX_WORD]


def _is_word(word: str) -> bool:
    return any(unicodedata.category(c)[0] in "LN" for c in word)


def top_drivers(explained: Sequence[Explained], label: str, k: int) -> list[Driver]:
    """The `k` words with the largest summed positive weight towards `label`, over the explanations
    whose predicted label is `label` (weights against it, and other labels' texts, do not count)."""
    weight: dict[str, float] = defaultdict(float)
    texts: dict[str, int] = defaultdict(int)
    for one in explained:
        if one.label != label:
            continue
        seen = set()
        for token in one.tokens:
            word = _word(token.token)
            if token.weight <= 0 or not _is_word(word):
                continue
            weight[word] += token.weight
            if word not in seen:
                texts[word] += 1
                seen.add(word)
    ranked = sorted(weight, key=lambda w: (-weight[w], w))[:k]
    return [Driver(word=w, weight=round(weight[w], 4), texts=texts[w]) for w in ranked]


@dataclass(frozen=True)
class DriverSource:
    """Where drivers come from: one worker's /explain, its token, and the budget of one alert."""

    worker_url: str
    token_file: Path | None = None
    texts: int = 8
    timeout_s: float = 5.0
    top: int = 5


async def drivers_for(alert: SentimentAlert, texts: Sequence[str], source: DriverSource) -> SentimentAlert:
    """`alert` with the words that drove its risen label in `texts`, or with a note saying why not.
    Never raises; waits at most `source.timeout_s`."""
    label = risen_label(alert)
    if label is None:
        return alert
    if not texts:
        return alert.model_copy(update={"drivers_note": f"no recent {label} tweets to explain"})
    try:
        answer = await asyncio.wait_for(_explain(source, list(texts)[-source.texts :]), source.timeout_s)
    except TimeoutError:
        note = f"the worker's /explain did not answer within {source.timeout_s:g}s"
    except Exception as exc:  # the worker is down, refuses, or sent something else: no drivers
        note = f"the worker's /explain failed: {type(exc).__name__}: {str(exc)[:200]}"
    else:
        explained = [e for e in answer.explanations if isinstance(e, Explained)]
        drivers = top_drivers(explained, label, source.top)
        note = f"{answer.method} on {len(explained)} recent {label} tweets ({answer.model or 'model'})"
        return alert.model_copy(update={"drivers": drivers, "drivers_note": note})
    log.warning("alert %s goes without drivers: %s", alert.alert_id, note)
    return alert.model_copy(update={"drivers_note": note})


async def _explain(source: DriverSource, texts: list[str]) -> ExplainResponse:
    import aiohttp

    headers = {}
    if source.token_file is not None:
        headers["Authorization"] = f"Bearer {source.token_file.read_text().strip()}"
    async with aiohttp.ClientSession() as session:
        url = source.worker_url.rstrip("/") + "/explain"
        async with session.post(url, json={"texts": texts}, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200].decode('utf-8', 'replace')}")
            return ExplainResponse.model_validate_json(body)
