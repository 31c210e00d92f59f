"""The loaded automation config, swapped whole on reload, and how plain events become automation signals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from funnels.automation.engine import Signal, store_specs
from funnels.automation.identity import Identify
from funnels.automation.steprule import Plan
from funnels.channels.network import Network
from funnels.clock import Clock
from funnels.config import Config, ConfigInvalid, DeliveryPolicy, load_config
from funnels.events import Event
from funnels.store.state import StateStore

DEFAULT_POLICY = DeliveryPolicy()


@dataclass(frozen=True)
class ConfigStatus:
    path: str | None
    loaded_ms: int | None
    errors: tuple[str, ...] = ()  # of the last reload that failed (the old config stayed)


class Automation:
    """What the server automates: the current `Plan` (None without a config) and how to reload it."""

    def __init__(self, state: StateStore, clock: Clock, path: Path | None = None) -> None:
        self.state = state
        self.clock = clock
        self.path = path
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self.status = ConfigStatus(path=str(path) if path else None, loaded_ms=None)
        self.on_reload: list[Callable[[], None]] = []  # called after each successful reload
        if path is not None:
            self.install(load_config(path))  # ConfigInvalid propagates: the server refuses to start

    @property
    def plan(self) -> Plan | None:
        return self._plan

    def install(self, config: Config) -> None:
        """Make `config` current (its action definitions are stored first, so jobs can reference them)."""
        plan = Plan.compile(config)
        with self.state.write() as connection:
            store_specs(connection, plan)
        with self._lock:
            self._plan = plan
            self.status = ConfigStatus(path=self.status.path, loaded_ms=self.clock.now_ms())

    def reload(self) -> Config:
        """Re-read the config file; on any problem keep the current config and raise `ConfigInvalid`."""
        if self.path is None:
            raise ConfigInvalid([])
        try:
            config = load_config(self.path)
        except ConfigInvalid as invalid:
            self.status = ConfigStatus(
                self.status.path, self.status.loaded_ms, tuple(str(error) for error in invalid.errors)
            )
            raise
        self.install(config)
        for callback in self.on_reload:
            callback()
        return config

    def delivery(self) -> tuple[DeliveryPolicy, dict[str, BaseModel]]:
        plan = self._plan
        if plan is None:
            return DEFAULT_POLICY, {}
        return plan.config.delivery, plan.config.channel_settings

    def network_allow(self) -> tuple[Network, ...]:
        """The current config's `network.allow` (none without a config: only public addresses)."""
        plan = self._plan
        return () if plan is None else plan.config.network_allow

    def signal_for(self, event: Event) -> Signal:
        """An event from `/v0/events` or Segment: an `identify` with a user id identifies an instance of the
        config's `segment.model`; any other event drives the instance its user key names, if any."""
        plan = self._plan
        if plan is not None and event.type == "identify" and event.user_id:
            name = event.properties.get("name")
            return Signal(
                event,
                identify=Identify(
                    model=plan.config.segment_model,
                    ids=(event.user_id,),
                    display_name=name if isinstance(name, str) else None,
                    properties=event.properties,
                ),
            )
        return Signal(event, ids=(event.user_key,))
