"""funnels: a self-hosted funnel engine (event ingestion, funnel analytics, funnel automation)."""

__version__ = "0.1.0"
