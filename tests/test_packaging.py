"""The wheel ships the code and the data files it reads, and nothing else from the working tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
NEEDED_DATA = ["infra/kafka/pom.xml", "infra/kafka/log4j2.properties", "stream/data/sample_tweets.csv"]


def test_every_python_package_of_the_tree_is_listed() -> None:
    tops = {name.split(".")[0] for name in PACKAGES}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in tops
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= set(PACKAGES), f"add {sorted(found - set(PACKAGES))} to [tool.setuptools] packages"


def test_a_wheel_from_a_tree_with_trained_models_ships_none_of_them(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    bundle = tree / "models" / "latest"  # what `sentistream train --output models/latest` leaves
    bundle.mkdir(parents=True)
    for name in ("sentistream.json", "config.json", "model.onnx", "metrics.csv", "tokenizer.json"):
        (bundle / name).write_text("{}")
    (tree / "stream" / "data" / "scratch.json").write_text("{}")  # stray data beside shipped data
    (tree / "model" / "eval-local.csv").write_text("a,b\n")

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=tree, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (tree / "dist").glob("sentistream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    assert not [n for n in names if n.startswith("models/") or "/models/" in n]
    assert not [n for n in names if n.endswith(("scratch.json", "eval-local.csv", ".onnx"))]
    assert set(NEEDED_DATA) <= set(names)
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert shipped == set(PACKAGES) - {"stream.data", "infra.kafka"}  # those two hold data only
    tops = {n.split("/")[0] for n in names if not n.startswith("sentistream-")}
    assert tops == {"sentistream", "model", "training", "stream", "dashboard", "infra"}
