"""`heap.settle` sets a started process's objects aside from the collector (in a process of its own: frozen
objects stay frozen)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.process  # a real server or CLI subprocess

PROGRAM = """
import gc
import funnels.app, funnels.cli, funnels.services  # what `funnels serve` has loaded when it settles
from funnels import heap
alive = len(gc.get_objects())
heap.settle()
print(alive, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_settle_freezes_what_the_started_process_holds_so_collections_skip_it() -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    alive, frozen, tracked = (int(n) for n in out.split())
    assert alive > 10_000  # the CLI's modules are loaded
    assert frozen >= alive * 0.9  # nearly everything alive then (less the garbage the collection freed)
    assert tracked < 100  # the collector now tracks only what came after
