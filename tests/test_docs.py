"""The docs cover every CLI command and every HTTP endpoint (so neither can be added undocumented)."""

from __future__ import annotations

from pathlib import Path

import typer.main

from funnels.app import create_app
from funnels.cli import app as cli_app

DOCS = Path(__file__).parent.parent / "docs"


def _commands(group: typer.Typer, prefix: str = "funnels") -> list[str]:
    click_group = typer.main.get_command(group)
    names = []
    for name, command in click_group.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            names += [f"{prefix} {name} {sub}" for sub in command.commands]
        else:
            names.append(f"{prefix} {name}")
    return names


def test_every_cli_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _commands(cli_app)
    assert {"funnels serve", "funnels import", "funnels query", "funnels keys create", "funnels demo"} <= set(
        commands
    )
    assert [c for c in commands if f"`{c}" not in text] == []


def test_every_endpoint_is_documented(services: object) -> None:
    text = (DOCS / "api.md").read_text()
    app = create_app(services, run_shipper=False)  # type: ignore[arg-type]
    paths = sorted(app.openapi()["paths"])
    assert "/v0/funnel" in paths and "/v1/batch" in paths
    verbs = ("GET", "POST", "PUT", "DELETE")
    assert [p for p in paths if f"`{p}`" not in text and not any(f"`{v} {p}`" in text for v in verbs)] == []
