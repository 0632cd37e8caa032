"""The relay's shared services, reachable from every handler as ``request.app[RELAY]``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .audit import AuditLog
from .auth import Authenticator
from .config import RelayConfig
from .pki import RelayPKI
from .presence import Presence
from .store import Store

VERSION = "0.1.0"


@dataclass(slots=True)
class RelayState:
    config: RelayConfig
    store: Store
    audit: AuditLog
    auth: Authenticator
    pki: RelayPKI
    presence: Presence


RELAY = web.AppKey("relay", RelayState)
