"""The gateway's listener: asyncssh's options, the host key, live connections, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import asyncssh

from ..state import VERSION, RelayState
from .login import GatewayLogin, check_asyncssh
from .router import SessionRouter
from .session import SshSession
from .spool import purge

log = logging.getLogger("helpline.sshgate")

#: The host key ``helpline-relay init`` writes into the data directory.
HOST_KEY_FILE = "ssh_host_ed25519_key"
#: Seconds from TCP connect to the end of authentication (a one-time code is typed by hand).
LOGIN_TIMEOUT = 120.0
#: A client that answers no keepalive for this many seconds times this many tries is gone.
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT_MAX = 3
#: Seconds given to connections and the gateway's own tasks to finish at shutdown.
STOP_TIMEOUT = 5.0


class GatewayConnection(GatewayLogin):
    """A connection's login (see :mod:`.login`), whose session channels may also be
    ``sftp`` or ``scp`` (see :mod:`.sftp`)."""

    def session_requested(self) -> SessionRouter | bool:  # type: ignore[override]
        shell = super().session_requested()
        if not isinstance(shell, SshSession):
            return shell  # refused
        return SessionRouter(self.gateway, shell)


class SshGateway:
    """The asyncssh server and everything it started: connections and tasks."""

    def __init__(self, relay: RelayState) -> None:
        self.relay = relay
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self.acceptor.get_port() if self.acceptor is not None else 0

    async def start(self, host: str, port: int) -> None:
        check_asyncssh()
        # asyncssh logs each exec'd command line at INFO, and a command can hold a secret.
        library_log = logging.getLogger("asyncssh")
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.WARNING)
        path = self.relay.config.data_dir / HOST_KEY_FILE
        try:
            host_key = asyncssh.read_private_key(path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise RuntimeError(
                f"cannot read the SSH gateway's host key {path}: {exc}"
                ' (or turn the gateway off: [ssh] listen = "" in relay.toml)'
            ) from None
        await asyncio.to_thread(purge, self.relay.config.data_dir)  # a dead run's spool files
        # SFTP and SCP are served per channel by SessionRouter, with its own sftp_factory
        # and allow_scp: given here, asyncssh would bypass session_requested (the shell leg).
        self.acceptor = await asyncssh.listen(
            host,
            port,
            server_factory=lambda: GatewayConnection(self),
            server_host_keys=[host_key],
            server_version=f"Helpline_{VERSION}",
            encoding=None,  # bytes both ways: a terminal is not always UTF-8
            line_editor=False,  # the remote PTY does the editing
            allow_pty=True,
            public_key_auth=True,
            kbdint_auth=True,
            password_auth=False,
            host_based_auth=False,
            gss_host=None,
            gss_kex=False,
            gss_auth=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            rdns_lookup=False,
            login_timeout=LOGIN_TIMEOUT,
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
        )
        log.info("SSH gateway listening on %s:%d", host, self.port)

    def spawn(self, coroutine: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task the gateway keeps (and awaits at shutdown)."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"sshgate: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def stop_listening(self) -> None:
        """No new connections; those open keep going (the broker ends their sessions)."""
        if self.acceptor is not None:
            self.acceptor.close()

    async def stop(self) -> None:
        """Close every connection and wait (boundedly) for the gateway's tasks."""
        self.stop_listening()
        connections = list(self.connections)
        for conn in connections:
            conn.close()
        waits = {asyncio.ensure_future(conn.wait_closed()) for conn in connections}
        if self.acceptor is not None:  # (from Python 3.12 this waits for the connections too)
            waits.add(asyncio.ensure_future(self.acceptor.wait_closed()))
        for group in (waits, set(self._tasks)):
            if group:
                _, pending = await asyncio.wait(group, timeout=STOP_TIMEOUT)
                for task in pending:
                    task.cancel()


async def start_gateway(relay: RelayState, host: str, port: int) -> SshGateway:
    gateway = SshGateway(relay)
    await gateway.start(host, port)
    return gateway
