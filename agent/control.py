"""The agent's local control socket: the customer's way to list and end sessions.

A Unix socket at ``CONFIG/agent.sock``, mode 0600 (only the agent's own user
can connect), speaking one JSON request per line: ``{"command": "list"}`` or
``{"command": "end", "session": ID}``. ``helpline-agent sessions`` is its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from .sessions import SessionHost

SOCKET_NAME = "agent.sock"
MAX_REQUEST = 4096


async def serve_control(host: SessionHost, directory: Path) -> asyncio.AbstractServer:
    path = directory / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            answer = await _answer(host, line[:MAX_REQUEST])
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)  # the socket is created 0600
    try:
        server = await asyncio.start_unix_server(handle, path=str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


async def _answer(host: SessionHost, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        command = request["command"]
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "error": "bad request"}
    if command == "list":
        return {"ok": True, "sessions": host.describe()}
    if command == "end":
        ended = await host.end_by_customer(str(request.get("session", "")))
        return {"ok": ended, "error": "" if ended else "no such session"}
    return {"ok": False, "error": f"unknown command {str(command)[:32]!r}"}


def control_request(directory: Path, request: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one request to a running agent (blocking client for the CLI)."""
    path = directory / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConnectionError(f"no agent is running with --config {directory}") from None
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")
