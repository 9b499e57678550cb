"""What a running server holds: settings, the store, live streams, the biometrics engine, maintenance mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voxgate.settings import Settings
from voxgate.store.db import Store

if TYPE_CHECKING:
    from voxgate.biometrics.engine import Biometrics
    from voxgate.streams.registry import StreamRegistry


@dataclass
class Services:
    settings: Settings
    store: Store
    streams: StreamRegistry | None = None
    biometrics: Biometrics | None = None
    locked: bool = False  # maintenance mode (persisted as the `maintenance` setting)
    extras: dict[str, object] = field(default_factory=dict)
