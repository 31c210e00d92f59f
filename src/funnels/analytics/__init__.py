"""Funnel analytics: a validated `FunnelQuery`, SQL builders per funnel type, and a plain-Python oracle."""
