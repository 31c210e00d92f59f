"""Segment-compatible ingestion (`/v1/*`). Filled in by the Segment work; routes are registered here."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["Segment"])
