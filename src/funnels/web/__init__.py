"""The dashboard: page routes, templates and static files (docs/dashboard.md)."""
