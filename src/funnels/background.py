"""A background loop: one named daemon thread, woken early by `wake()`, ended by `stop()`."""

from __future__ import annotations

import threading


class BackgroundLoop:
    """Subclasses implement `_run`, which loops until `self._stop` is set and may wait on `self._wake`."""

    thread_name = "funnels-background"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop and wait for it (it may be started again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._stop.clear()
