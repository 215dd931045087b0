"""Each command imports only the heavy libraries it needs (docs/ARCHITECTURE.md: project imports at
the top of a module, heavy third-party ones lazy).

Project modules are imported at the top of the module that uses them, except where that would pull
one of HEAVY into a process that does not need it (those imports sit in the function, marked
`# lazy: LIB`). These tests run `sentistream COMMAND --help` (the command's module imported and its
flags built) in a fresh interpreter, so sys.modules holds only what that command pulled in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sentistream.cli import SUBCOMMANDS

HEAVY = (
    "torch", "transformers", "faust", "onnxruntime", "streamlit", "datasets", "optuna", "captum",
    "duckdb", "matplotlib", "pyarrow",
)  # fmt: skip

# The heavy libraries a command may import before it runs; every other one must stay lazy.
# The offline commands and `replay` read datasets with pandas, which imports pyarrow.
DATASET_READERS = {"pyarrow"}
ALLOWED: dict[str, set[str]] = {
    "kafka": set(),
    "train": DATASET_READERS,
    "evaluate": DATASET_READERS,
    "export": DATASET_READERS,
    "eda": DATASET_READERS,
    "tune": DATASET_READERS,
    "predict": set(),
    "worker": set(),
    "produce": set(),
    "replay": DATASET_READERS,
    "dashboard": set(),
    "deploy": set(),
    "sink": set(),
    "monitor": set(),
    "tail": set(),
    "dlq": set(),
    "demo": set(),
}


def imported_after(argv: list[str]) -> dict[str, list[str]]:
    """{"heavy": the HEAVY libraries, "commands": the command modules} imported by `sentistream ARGV`."""
    modules = sorted({module for module, _ in SUBCOMMANDS.values()})
    code = (
        "import json, sys\n"
        "from sentistream.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],\n"
        f"                  'commands': [m for m in {modules!r} if m in sys.modules]}}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_command_has_a_decision_on_its_heavy_imports() -> None:
    assert set(ALLOWED) == set(SUBCOMMANDS)


def test_top_level_help_imports_no_command_module_and_no_heavy_library() -> None:
    assert imported_after(["--help"]) == {"heavy": [], "commands": []}


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_a_commands_help_imports_only_the_heavy_libraries_it_needs(command: str) -> None:
    heavy = set(imported_after([command, "--help"])["heavy"])
    assert heavy <= ALLOWED[command], (
        f"`sentistream {command} --help` imports {sorted(heavy - ALLOWED[command])}: "
        "import it inside the function that needs it, marked `# lazy: LIB`"
    )
