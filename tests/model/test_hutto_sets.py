"""`benchmarks/hutto_sets.py`: the other-source sets are labelled by the raters' majority side."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd

from benchmarks.hutto_sets import SETS, main, majority_label


def test_the_label_is_the_side_most_raters_took_and_a_tie_drops_the_text() -> None:
    assert majority_label([2, 3, -1, 0]) == "positive"
    assert majority_label([-4, -1, 0, 0, 0]) == "neutral"
    assert majority_label([-2, -1, 1]) == "negative"
    assert majority_label([-2, 2, 0]) is None and majority_label([-1, 1]) is None


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_the_sets_come_out_of_the_source_package_as_text_label_csv(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as archive:
        for name in SETS:
            truth = "1\t2.5\tlove it, so good\n2\t-0.1\tmeh, it has\ttabs\n3\t0.0\ta tie\n"
            ratings = "1\t2.5\t1.0\t[3, 2, 1]\n2\t-0.1\t1.0\t[0, 0, -1]\n3\t0.0\t1.0\t[1, -1]\n"
            _add(archive, f"hutto_ICWSM_2014/{name}_GroundTruth.txt", truth.encode())
            _add(archive, f"hutto_ICWSM_2014/{name}_anonDataRatings.txt", ratings.encode())
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as outer:
        _add(outer, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    monkeypatch.setattr("sys.argv", ["hutto_sets.py", str(sdist), "--output", str(tmp_path / "out")])
    main()
    frame = pd.read_csv(tmp_path / "out" / "hutto-tweets.csv")
    assert frame.to_dict("records") == [
        {"text": "love it, so good", "label": "positive"},
        {"text": "meh, it has\ttabs", "label": "neutral"},
    ]
    assert "2 rows (1 ties dropped)" in capsys.readouterr().out
