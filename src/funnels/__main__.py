"""`python -m funnels`: the same command as `funnels` (how the server starts its delivery process)."""

from funnels.cli import app

app(prog_name="funnels")
