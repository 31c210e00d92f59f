"""Ingestion: normalizing every accepted event shape into `Event`, the durable log, and file import."""
