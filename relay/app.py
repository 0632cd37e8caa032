"""Assembling the relay: services, the aiohttp application, the TLS listener, shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from protocol.errors import ErrorCode

from . import agents, consoles
from .api import admin, audit, devices, enrol, session, sessions, updates
from .api.common import auth_middleware, errors_middleware
from .audit import AuditLog
from .auth import Authenticator
from .broker import Broker
from .config import RelayConfig
from .pki import RelayPKI
from .presence import Presence
from .recovery import seal_interrupted_sessions
from .sshgate import SshGateway, start_gateway
from .state import RELAY, RelayState
from .store import open_store
from .tls import start_tls_server
from .updates.engine import RolloutEngine
from .web import cookie_auth_middleware, setup_web

log = logging.getLogger("helpline.relay")

#: Request bodies larger than this are refused (CSRs and JSON forms are small).
MAX_REQUEST_BODY = 1024 * 1024
#: How often the last-seen time of online agents is written to the store.
LAST_SEEN_FLUSH_SECONDS = 60.0


def split_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


async def build_state(config: RelayConfig) -> RelayState:
    store = await open_store(config.store_url)
    audit_log = AuditLog(store, config.data_dir / "audit-head.json")
    state = RelayState(
        config=config,
        store=store,
        audit=audit_log,
        auth=Authenticator(
            store, audit_log, config.auth, initial_admin=config.data_dir / "initial-admin.json"
        ),
        pki=RelayPKI(config.data_dir),
        presence=Presence(),
    )
    state.broker = Broker(state)
    state.updates = RolloutEngine(state)
    state.presence.online_listeners.append(state.updates.device_online)
    return state


def build_app(state: RelayState) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, cookie_auth_middleware, auth_middleware],
        client_max_size=MAX_REQUEST_BODY,
    )
    app[RELAY] = state
    for module in (session, devices, admin, audit, enrol, sessions, agents, consoles, updates):
        app.add_routes(module.routes)
    app.on_shutdown.append(_close_links)
    setup_web(app)  # after _close_links: sessions end as "relay shutdown", then sockets close
    return app


async def _close_links(app: web.Application) -> None:
    await app[RELAY].broker.shutdown()
    presence = app[RELAY].presence
    links = [*presence.agents.values(), *presence.consoles]
    for link in links:
        try:
            await link.close(ErrorCode.GOING_AWAY, "relay shutting down")
        except (ConnectionError, RuntimeError):
            continue


async def _flush_last_seen(state: RelayState) -> None:
    while True:
        await asyncio.sleep(LAST_SEEN_FLUSH_SECONDS)
        for link in list(state.presence.agents.values()):
            await state.store.update_device(link.device_id, last_seen=link.last_seen)


@dataclass(slots=True)
class RunningRelay:
    state: RelayState
    runner: web.AppRunner
    server: asyncio.Server
    tasks: list[asyncio.Task[None]]
    ssh: SshGateway | None = None

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        if self.ssh is not None:
            self.ssh.stop_listening()
        for task in self.tasks:
            task.cancel()
        await self.state.updates.stop()
        await self.runner.cleanup()  # ends every session, SSH ones included
        if self.ssh is not None:
            await self.ssh.stop()
        await self.state.store.close()
        self.state.auth.close()


async def start_relay(config: RelayConfig, listen: str | None = None) -> RunningRelay:
    """Open the store, load the PKI and listen. ``listen`` overrides the config."""
    state = await build_state(config)
    app = build_app(state)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    host, port = split_host_port(listen or config.server.listen)
    server = await start_tls_server(
        runner.server,  # type: ignore[arg-type]
        state.pki.context,
        host,
        port,
        handshake_timeout=config.server.tls_handshake_timeout,
        shared_buffer=config.server.shared_tls_buffer,
        backlog=4096,
    )
    await seal_interrupted_sessions(state)
    await state.updates.start()
    ssh = None
    ssh_listen = ""
    if config.ssh.listen:
        ssh_host, ssh_port = split_host_port(config.ssh.listen)
        ssh = await start_gateway(state, ssh_host, ssh_port)
        ssh_listen = f"{ssh_host}:{ssh.port}"
    tasks = [
        asyncio.create_task(_flush_last_seen(state)),
        asyncio.create_task(state.presence.watchdog.run()),
    ]
    await state.audit.record(
        "relay",
        "relay.start",
        "",
        listen=f"{host}:{port}",
        ssh_listen=ssh_listen,
        at=time.time(),
    )
    log.info("relay listening on https://%s:%d", host, server.sockets[0].getsockname()[1])
    return RunningRelay(state, runner, server, tasks, ssh)
