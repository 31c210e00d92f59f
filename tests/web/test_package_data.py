"""Every template and static file is in the package build (pyproject's package-data), not only in a checkout."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
PACKAGE = ROOT / "src" / "funnels"


def test_templates_and_static_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "funnels"
    ]
    files = [
        path.relative_to(PACKAGE).as_posix()
        for folder in ("web/templates", "web/static")
        for path in (PACKAGE / folder).rglob("*")
        if path.is_file()
    ]
    assert "web/templates/base.html" in files and "web/static/app.js" in files
    assert [name for name in files if not any(fnmatch(name, pattern) for pattern in patterns)] == []
