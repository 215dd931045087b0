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


def imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the shipped modules that import it (third-party imports only)."""
    import ast
    import importlib.metadata

    by_module = importlib.metadata.packages_distributions()
    ours = {name.split(".")[0] for name in PACKAGES}
    found: dict[str, set[str]] = {}
    for top in ours:
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    root = name.split(".")[0]
                    if root in ours or root in sys.stdlib_module_names:
                        continue
                    for dist in by_module.get(root, [root]):
                        found.setdefault(dist.lower().replace("_", "-"), set()).add(
                            str(path.relative_to(ROOT))
                        )
    return found


def declared(requirements: list[str]) -> set[str]:
    import re

    return {
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements
    }


def test_every_library_the_shipped_code_imports_is_a_declared_dependency() -> None:
    # Dev extras do not count: a user's `pip install sentistream` does not get them.
    main = declared(PYPROJECT["project"]["dependencies"]) | declared(
        PYPROJECT["project"]["optional-dependencies"]["gpu"]
    )
    missing = {
        dist: sorted(files)[:3] for dist, files in imported_distributions().items() if dist not in main
    }
    assert missing == {}, f"declare these in pyproject.toml [project] dependencies: {missing}"


def test_no_dependency_is_declared_twice() -> None:
    names = [n for n in (declared([r]) for r in PYPROJECT["project"]["dependencies"]) for n in n]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
