"""Delivery in a child process: `funnels serve` runs its action worker as `funnels worker`, supervised.

Why a process: one Python interpreter runs one thread at a time. The server's request handling and ingest
transactions and the worker's claims, renders, sends and records all need it, and at a few hundred
single-event requests a second they no longer fit in one (docs/benchmarks.md). A child process delivers on
the machine's other core, and the server's interpreter is left to requests.

How it works:
- The server starts the child with the app (`WorkerProcess.start`) and hands it the read end of a pipe
  (`funnels worker --wake-fd N`). After each commit that scheduled a job due within a second
  (`store.notify.due_soon`; a later one is found by the child's poll), and after a manual retry, the
  server writes a zero byte to the pipe (`wake`, non-blocking: a full pipe already means "wake up"); the
  child's worker wakes at once instead of at its next poll.
- The child runs the config the server runs, not whatever the config file says now (it may have been
  edited into an invalid state since): the server writes the document it loaded to
  `<data-dir>/delivery-config.json` before it starts the child, and again after each successful reload
  (`SIGHUP`, `POST /v0/config/reload`), then writes `R` to the pipe; the child re-reads that file.
  Settings the config leaves to the environment (SMTP passwords, tokens) are never written: the child
  inherits the server's environment.
- The pipe also tells the child when the server is gone: the server holds its only write end, so when the
  server stops or dies (even `kill -9`) the child reads end-of-file, finishes its in-flight sends, records
  them and exits. Nothing is lost if it is killed too: leased jobs are claimed again when the lease ends.
- Each child gets a fresh name for its leases (`--lease-owner`). When a child exits, the server releases
  the jobs it still held at once (`release`, i.e. `worker.release_jobs`) rather than after their lease:
  those not yet being sent are due again, at-most-once ones cut off mid-send end `unknown`. A dead
  process writes nothing more, so this is safe; a `funnels worker` run separately has no supervisor and
  is recovered by the lease.
- If the child exits while the server runs, the server logs it and starts another after `restart_delay_s`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

WAKE = b"\0"
RELOAD = b"R"

log = logging.getLogger(__name__)


class WorkerProcess:
    """A supervised `funnels worker` child over the server's data directory and config."""

    def __init__(
        self,
        data_dir: Path,
        config: Callable[[], dict[str, Any]],
        *,
        concurrency: int = 16,
        restart_delay_s: float = 1.0,
        stop_timeout_s: float = 60.0,
        release: Callable[[str], None] | None = None,
        state_url: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config  # the document of the config the server runs now
        self.config_path = data_dir / "delivery-config.json"
        self.concurrency = concurrency
        self.restart_delay_s = restart_delay_s
        self.stop_timeout_s = stop_timeout_s
        self.release = release  # of a lease owner's jobs, once that child has exited
        self.state_url = state_url  # handed over in the environment: a password in it stays out of `ps`
        self.public_url = public_url  # the server's: the base of the child's unsubscribe links
        self.owner = ""  # the lease owner name of the current child
        self.process: subprocess.Popen[bytes] | None = None
        self._read_fd = -1
        self._write_fd = -1
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "funnels",
            "worker",
            "--config",
            str(self.config_path),
            "--data-dir",
            str(self.data_dir),
            "--concurrency",
            str(self.concurrency),
            "--wake-fd",
            str(self._read_fd),
            "--lease-owner",
            self.owner,
            *(("--public-url", self.public_url) if self.public_url else ()),
        ]

    def write_config(self) -> None:
        """Write the server's config for the child (atomically: the child never reads half a file)."""
        partial = self.config_path.with_name(self.config_path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold secrets
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(self.config(), option=orjson.OPT_INDENT_2))
        os.replace(partial, self.config_path)

    def start(self) -> None:
        self.write_config()
        self._stopping.clear()
        self._read_fd, self._write_fd = os.pipe()  # neither end is inherited by other children
        os.set_blocking(self._write_fd, False)
        self._spawn()
        self._monitor = threading.Thread(target=self._supervise, name="funnels-worker-process", daemon=True)
        self._monitor.start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self.owner = f"serve-{os.getpid()}-{secrets.token_hex(6)}"
                # Its own process group: a Ctrl-C in the server's terminal stops the server, which then
                # stops the child through the pipe (after its in-flight sends), not both at once.
                env = dict(os.environ)
                if self.state_url:
                    env["FUNNELS_STATE_URL"] = self.state_url
                self.process = subprocess.Popen(
                    self.command(), pass_fds=(self._read_fd,), process_group=0, env=env
                )

    def _supervise(self) -> None:
        while (process := self.process) is not None:
            owner = self.owner
            code = process.wait()
            self._release(owner)
            if self._stopping.is_set():
                return
            log.error("the delivery process exited with %s; starting another", code)
            while not self._stopping.wait(self.restart_delay_s):
                try:
                    self._spawn()
                    break
                except OSError as error:  # e.g. out of processes: keep trying while the server runs
                    log.error("cannot start the delivery process (%s); trying again", error)

    def _release(self, owner: str) -> None:
        if self.release is None:
            return
        try:
            self.release(owner)
        except Exception:  # e.g. the store is closing: the lease still ends, later
            log.exception("cannot release the jobs of the delivery process that exited")

    def wake(self) -> None:
        """Tell the child a job is due now (never blocks)."""
        self._send(WAKE)

    def reload(self) -> None:
        """The server reloaded its config: hand the new one to the child."""
        self.write_config()
        self._send(RELOAD)

    def _send(self, message: bytes) -> None:
        # A full pipe (64 KiB of unread wake-ups) means the child is not reading at all; it will find the
        # bytes when it does. Closed: the server is stopping.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, message)

    def stop(self) -> None:
        """Let the child finish its in-flight sends and exit (SIGTERM, then SIGKILL, if it takes too long)."""
        with self._lock:  # no restart from here on
            self._stopping.set()
            for fd in (self._write_fd, self._read_fd):  # end-of-file on the pipe: the child drains, exits
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._write_fd = self._read_fd = -1
            process = self.process
        if process is not None:
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
            self._monitor = None
