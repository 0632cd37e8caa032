"""Who is connected right now: agents by device id, and consoles to notify.

One live connection per device: a newer one replaces the older (an agent that
lost its network reconnects before the relay noticed the old socket died).
Consoles receive a ``DeviceStatus`` when a device they may see comes or goes;
``watchers`` (the web console's event sockets) are called with ``("online" |
"offline" | "inventory", link)``: they must not block.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from protocol import DeviceStatus
from protocol.errors import ErrorCode, UsageError

from .links import AgentLink, ConsoleLink, IdleWatchdog


class Presence:
    def __init__(self) -> None:
        self.agents: dict[str, AgentLink] = {}
        self.consoles: set[ConsoleLink] = set()
        self.watchdog = IdleWatchdog()
        self.watchers: set[Callable[[str, AgentLink], None]] = set()
        #: Called with each agent that comes online (rollouts send it what it missed).
        self.online_listeners: list[Callable[[AgentLink], Awaitable[None]]] = []

    def is_online(self, device_id: str) -> bool:
        return device_id in self.agents

    def last_seen(self, device_id: str) -> float | None:
        link = self.agents.get(device_id)
        return None if link is None else link.last_seen

    async def agent_online(self, link: AgentLink) -> None:
        previous = self.agents.get(link.device_id)
        self.agents[link.device_id] = link
        if previous is not None:
            await previous.close(ErrorCode.CONFLICT, "replaced by a newer connection")
        await self._notify(link, online=True)
        for listener in self.online_listeners:
            await listener(link)

    async def agent_offline(self, link: AgentLink) -> None:
        if self.agents.get(link.device_id) is link:
            del self.agents[link.device_id]
            await self._notify(link, online=False)

    async def disconnect_agent(self, device_id: str, code: int, message: str) -> None:
        link = self.agents.get(device_id)
        if link is not None:
            await link.close(code, message)

    def inventory_changed(self, link: AgentLink) -> None:
        self._tell_watchers("inventory", link)

    def _tell_watchers(self, what: str, link: AgentLink) -> None:
        for watcher in list(self.watchers):
            watcher(what, link)

    async def _notify(self, agent: AgentLink, *, online: bool) -> None:
        self._tell_watchers("online" if online else "offline", agent)
        status = DeviceStatus(device_id=agent.device_id, name=agent.name, online=online)
        for console in list(self.consoles):
            if console.may_see(agent.group) and not console.ws.closed:
                try:
                    console.conn.send(status)
                    await console.flush()
                except (ConnectionError, RuntimeError, UsageError):
                    continue

    def snapshot(self) -> dict[str, Any]:
        return {"agents": len(self.agents), "consoles": len(self.consoles)}
