"""What the agent reports about its machine: hostname, OS, user, version, addresses."""

from __future__ import annotations

import getpass
import platform
import socket

from protocol import Inventory

AGENT_VERSION = "0.1.0"


def local_addresses() -> tuple[str, ...]:
    """Addresses the hostname resolves to locally (no traffic leaves the machine)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))[:32]


def collect_inventory() -> Inventory:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Inventory(
        hostname=socket.gethostname()[:255],
        os=f"{platform.system()} {platform.release()} ({platform.machine()})"[:255],
        user=user[:255],
        agent_version=AGENT_VERSION,
        addresses=local_addresses(),
    )
