"""Write `sample_tweets.csv`: a few hundred labelled, tweet-like texts written for this project.

Nothing here is copied from a public dataset. Hand-written templates and fragments are combined by a
seeded generator, so the file is reproducible (`python -m stream.data.make_sample`) and covers what
a sentiment model meets on social media: hashtags, @mentions, emojis, links, negations ("not bad"),
sarcasm ("great, another delay"), and neutral news-like lines. Columns: `text,label,created_at`.
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUTPUT = Path(__file__).with_name("sample_tweets.csv")
PER_LABEL = 150
START = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)

SLOTS = {
    "thing": ["the new phone", "this update", "my order", "the train", "the app", "customer support",
              "the coffee here", "the concert", "this laptop", "the new season", "their delivery",
              "the hotel room", "the checkout page", "the battery life", "the firmware update",
              "the flight", "the bike lane", "the pizza", "this keyboard", "the refund process"],
    "brand": ["@AcmeMobile", "@CityRail", "@BeanThereCafe", "@SkyHopAir", "@PixelForge", "@QuickCart",
              "@NimbusBank", "@StreamBox", "@GreenGrocer", "@VoltBikes"],
    "tag": ["#MondayMotivation", "#fail", "#win", "#tech", "#travel", "#foodie", "#commute", "#gaming",
            "#customerservice", "#weekend", "#update", "#music", "#startup", "#rainyday"],
    "pos_emoji": ["😍", "🎉", "🙌", "❤️", "😊", "👍", "🔥", "✨", "🥳", ":)"],
    "neg_emoji": ["😡", "😤", "👎", "😞", "🙄", "💔", "😩", ":(", "🤬", "😒"],
    "url": ["https://t.co/a8Xk2pQ", "https://bit.ly/3xYz9", "https://example.com/news/4411",
            "http://t.co/Zq7LmN", "https://status.example.org/incident/77"],
    "time": ["this morning", "today", "last night", "again", "for the third time this week",
             "on a Monday", "right before my meeting", "all weekend"],
    "minutes": ["20 minutes", "35 minutes", "45 mins", "an hour", "two hours", "forty minutes"],
    "place": ["downtown", "the airport", "Platform 4", "the north line", "Main Street", "the city centre"],
}  # fmt: skip

TEMPLATES = {
    "positive": [
        "Honestly {thing} is amazing {pos_emoji} {tag}",
        "Big thanks to {brand} for sorting out {thing} so fast! {pos_emoji}",
        "{thing} just made my day {pos_emoji}{pos_emoji}",
        "Not bad at all, {thing} exceeded my expectations {tag}",
        "Can't complain, {thing} worked perfectly {time} {pos_emoji}",
        "Loving {thing} so far. Highly recommend {url}",
        "{brand} you absolutely nailed it with {thing} {pos_emoji} {tag}",
        "Didn't expect much but {thing} is actually brilliant",
        "So happy with {thing} right now {pos_emoji} {tag} {tag}",
        "Shoutout to {brand}, {thing} arrived early and works great",
        "Best decision this year: switching to {brand}. {thing} is so smooth {pos_emoji}",
        "wow {thing} is sooo good, no regrets {pos_emoji}",
        "Never had a problem with {thing}, five stars {pos_emoji}",
        "{thing} is fast, quiet and cheap. What more do you want? {tag}",
        "Great vibes {place} {time} {pos_emoji} {tag}",
    ],
    "negative": [
        "{thing} crashed {time}. Thanks for nothing {brand} {neg_emoji}",
        "Waited {minutes} for {thing}. Unacceptable {neg_emoji} {tag}",
        "Oh great, {thing} is broken {time}. Just what I needed {neg_emoji}",
        "Wow, {brand}, love paying extra for {thing} that doesn't work. Brilliant. {neg_emoji}",
        "{thing} is not good. Not good at all {neg_emoji}",
        "Never ordering from {brand} again, {thing} was a disaster {tag}",
        "Still no reply from {brand} about {thing} {neg_emoji} {url}",
        "Can't believe how bad {thing} is {time} {neg_emoji}{neg_emoji}",
        "Yay, {thing} deleted all my settings {time}. Fantastic work {brand} {neg_emoji}",
        "Worst experience with {thing} ever {tag} {neg_emoji}",
        "{brand} {thing} is overpriced and it doesn't even work properly",
        "Cancelled {time}, stuck at {place} for {minutes} {neg_emoji} {tag}",
        "I'm so tired of {thing} failing {time} {neg_emoji}",
        "Really disappointed with {thing}, not worth the money {neg_emoji}",
        "Sure {brand}, keep telling me {thing} is 'working as intended' {neg_emoji}",
    ],
    "neutral": [
        "{brand} announces changes to {thing} starting next month {url}",
        "Service update: delays expected on {place} {time} {url}",
        "Anyone know if {thing} is available in stores yet? {tag}",
        "Reading about {thing} {url}",
        "{thing} will be discussed at the city council meeting on Thursday",
        "Report: {brand} to open a new office near {place} {url}",
        "Heading to {place} {time}, will post pics later {tag}",
        "Does {thing} support dark mode? asking for a friend {brand}",
        "Poll: how long do you usually wait for {thing}? {tag}",
        "{brand} shares fell 2% in early trading {url}",
        "Weather alert for {place}: heavy rain expected this afternoon {url}",
        "Switching my plan with {brand} next week, any tips?",
        "The {thing} review is out now, full specs here {url}",
        "Roadworks on {place} until Friday, allow extra time {tag}",
        "{brand} says {thing} is rolling out in phases over the next weeks",
    ],
}

# Whole lines for cases templates write badly: short quips, emoji-only feelings, mixed scripts.
HANDWRITTEN = [
    ("best. day. ever. 🎉🎉", "positive"),
    ("ok this is actually really cute 😭❤️", "positive"),
    ("finally got tickets!!! #blessed", "positive"),
    ("not gonna lie, that was the best pasta I've had in years", "positive"),
    ("@jess_k congrats on the new job!! so proud of you 🥳", "positive"),
    ("Merci beaucoup @BeanThereCafe, le meilleur café du quartier ☕😊", "positive"),
    ("ugh. monday. again. 😩", "negative"),
    ("my flight got cancelled and nobody at the desk knows anything", "negative"),
    ("lol of course it's raining the one day I forgot my umbrella 🙄", "negative"),
    ("I can't stand this heat anymore 🥵", "negative"),
    ("thanks for the 3am construction noise, really appreciate it neighbours", "negative"),
    ("why is everything so expensive now 💸😞", "negative"),
    ("Train 8:15 to Central is running on time.", "neutral"),
    ("New episode drops Friday at 9pm ET", "neutral"),
    ("Meeting moved to 3pm, room B12", "neutral"),
    ("The museum is closed on public holidays.", "neutral"),
    ("just landed in Lisbon", "neutral"),
    ("RT @CityNewsDesk: Council publishes the 2025 budget draft https://example.com/budget", "neutral"),
]


def generate(per_label: int = PER_LABEL, seed: int = 13) -> list[dict[str, str]]:
    """`per_label` unique texts per label (hand-written lines included), shuffled, with timestamps."""
    rng = random.Random(seed)  # noqa: S311  # reproducible sample data, not security
    rows = [{"text": text, "label": label} for text, label in HANDWRITTEN]
    for label, templates in TEMPLATES.items():
        wanted = per_label - sum(1 for _, lab in HANDWRITTEN if lab == label)
        rows += [{"text": t, "label": label} for t in _unique_fills(templates, wanted, rng)]
    rng.shuffle(rows)
    return _with_timestamps(rows, rng)


def _unique_fills(templates: list[str], count: int, rng: random.Random) -> list[str]:
    texts: dict[str, None] = {}  # a dict keeps insertion order, so the output is reproducible
    while len(texts) < count:
        template = rng.choice(templates)
        texts[_fill(template, rng)] = None
    return list(texts)


def _fill(template: str, rng: random.Random) -> str:
    # Each slot is drawn separately, so "{tag} {tag}" can give two different hashtags.
    out = template
    while "{" in out:
        start = out.index("{")
        name = out[start + 1 : out.index("}", start)]
        out = out[:start] + rng.choice(SLOTS[name]) + out[start + len(name) + 2 :]
    return out[0].upper() + out[1:] if out[0].islower() and rng.random() < 0.7 else out


def _with_timestamps(rows: list[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """Bursty arrival times (exponential gaps, mean 20 s) so `replay --speedup` has something to follow."""
    now = START
    for row in rows:
        now += timedelta(seconds=round(rng.expovariate(1 / 20), 3))
        row["created_at"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return rows


def write(rows: list[dict[str, str]], path: Path) -> None:
    """Write rows as an RFC-4180 UTF-8 CSV with a `text,label,created_at` header."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "created_at"])
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    """Regenerate the shipped sample (or write one elsewhere with --output)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--per-label", type=int, default=PER_LABEL)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rows = generate(args.per_label, args.seed)
    write(rows, args.output)
    print(f"wrote {len(rows)} rows to {args.output}")


if __name__ == "__main__":
    main()
