"""stream/ as a house of deployables (docs/ARCHITECTURE.md, "stream/: the contract and one package per
process"): every module is named in the architecture document; the contract imports no deployable;
a deployable imports the contract, `model/` and itself, never another deployable; nothing outside
stream/ imports the worker; the feeders and the sink cannot reach Faust or torch through any import,
lazy ones included; `deploy` checks an ONNX bundle without loading either.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STREAM = ROOT / "stream"
PROJECT = ("sentistream", "model", "training", "stream", "dashboard", "infra")
DEPLOYABLES = ("worker", "feeders", "sink", "monitor", "deployment")
NEVER = {"faust": "Faust", "torch": "torch", "transformers": "transformers (it brings torch)"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    return {module_name(p): p for top in PROJECT for p in (ROOT / top).rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


@cache
def imports_of(name: str) -> frozenset[str]:
    """Every module `name` imports, at the top or inside a function (not under TYPE_CHECKING)."""
    tree = ast.parse(project_modules()[name].read_text())
    skipped = {id(n) for t in ast.walk(tree) if _type_checking_only(t) for b in t.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in project_modules()
            }
    return frozenset(found)


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reachable(start: list[str]) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level packages) that importing `start` can load."""
    seen, third_party, todo = set(), set(), list(start)
    while todo:
        name = todo.pop()
        for candidate in with_parents(name):
            if candidate in seen:
                continue
            if candidate in project_modules():
                seen.add(candidate)
                todo.extend(imports_of(candidate))
            elif candidate.split(".")[0] not in PROJECT:
                third_party.add(candidate.split(".")[0])
    return seen, third_party


def package_modules(package: str) -> list[str]:
    return sorted(m for m in project_modules() if m == package or m.startswith(package + "."))


def contract_modules() -> set[str]:
    return {module_name(p) for p in STREAM.glob("*.py")} | set(package_modules("stream.data"))


def test_every_stream_module_is_named_in_the_architecture_document():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [
        str(p.relative_to(ROOT)) for p in sorted(STREAM.rglob("*.py")) if str(p.relative_to(ROOT)) not in doc
    ]
    assert not missing, f"name these in docs/ARCHITECTURE.md: {missing}"


def test_stream_has_one_package_per_deployable_each_saying_what_runs():
    packages = {p.parent.name for p in STREAM.glob("*/__init__.py")}
    assert packages == set(DEPLOYABLES)
    for name in DEPLOYABLES:
        doc = ast.get_docstring(ast.parse((STREAM / name / "__init__.py").read_text()))
        assert doc and "sentistream" in doc and "load" in doc.lower(), (
            f"stream/{name}/__init__.py: say what runs and what it loads"
        )


def stream_imports(module: str) -> set[str]:
    return {i for i in imports_of(module) if i.split(".")[0] == "stream"}


def test_the_contract_imports_no_deployable():
    for module in contract_modules():
        wrong = {i for i in stream_imports(module) if i.split(".")[1:2] and i.split(".")[1] in DEPLOYABLES}
        assert not wrong, f"{module} imports {wrong}: the contract must not depend on a deployable"


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_a_deployable_imports_only_the_contract_and_itself(deployable):
    own = f"stream.{deployable}"
    allowed = contract_modules() | {"stream"}
    for module in package_modules(own):
        wrong = {
            i
            for i in stream_imports(module)
            if i not in allowed and not (i == own or i.startswith(own + "."))
        }
        assert not wrong, f"{module} imports {wrong}: deployables never import each other"


def test_nothing_outside_the_worker_imports_it_but_the_demo_that_starts_it():
    outside = [m for m in project_modules() if not m.startswith("stream.worker")]
    importers = {
        m for m in outside for i in imports_of(m) if i == "stream.worker" or i.startswith("stream.worker.")
    }
    # infra/demo.py starts every process and takes the worker's --web-port from its owner class.
    assert importers == {"infra.demo"}


@pytest.mark.parametrize("deployable", ["feeders", "sink"])
def test_feeders_and_sink_cannot_reach_faust_or_torch(deployable):
    _, third_party = reachable(package_modules(f"stream.{deployable}"))
    assert not third_party & set(NEVER), f"stream/{deployable} can import {third_party & set(NEVER)}"


def test_a_tangled_import_is_caught(tmp_path, monkeypatch):
    """The closure follows lazy imports through other project modules (what the tests above rely on)."""
    seen, third_party = reachable(["stream.worker.cli"])
    assert "faust" in third_party and "stream.worker.app" in seen


def test_deploy_checks_an_onnx_bundle_without_loading_faust_or_torch(bundle: Path):
    code = (
        "import json, sys\n"
        "import stream.deployment.cli\n"
        "from model.settings import ModelSettings\n"
        "from stream.bundles import load_verified\n"
        f"engine = load_verified(__import__('pathlib').Path({str(bundle)!r}), ModelSettings(backend='onnx'))\n"
        "print(json.dumps({'labels': list(engine.labels), 'loaded': [m for m in ('faust', 'torch') if m in sys.modules]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["labels"] == ["negative", "neutral", "positive"]
    assert report["loaded"] == []
