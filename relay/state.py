"""The relay's shared services, reachable from every handler as ``request.app[RELAY]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .audit import AuditLog
from .auth import Authenticator
from .config import RelayConfig
from .pki import RelayPKI
from .presence import Presence
from .store import Store

if TYPE_CHECKING:
    from .broker import Broker
    from .updates.engine import RolloutEngine

VERSION = "0.1.0"


@dataclass(slots=True)
class RelayState:
    config: RelayConfig
    store: Store
    audit: AuditLog
    auth: Authenticator
    pki: RelayPKI
    presence: Presence
    broker: Broker = None  # type: ignore[assignment]  # set right after construction
    updates: RolloutEngine = None  # type: ignore[assignment]  # likewise


RELAY = web.AppKey("relay", RelayState)
