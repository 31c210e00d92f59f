"""The package layering holds: `lint-imports` checks the contracts in pyproject.toml (`[tool.importlinter]`):
each layer imports only the layers below it (docs/architecture.md), analytics and automation stay
independent, and no module outside the store package imports SQLAlchemy except the listed exceptions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # a real server or CLI subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
