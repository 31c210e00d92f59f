"""Funnels that act: identity, the step rule, scheduling and delivery of actions."""
