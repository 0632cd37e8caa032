"""Sessions and their recordings over REST, and the technicians' SSH keys.

* ``GET /api/v1/sessions``: live and recent sessions (technicians: their own).
* ``POST /api/v1/sessions/{id}/kill``: an admin ends a live session.
* ``GET /api/v1/recordings`` and ``GET /api/v1/recordings/{id}``: auditors and
  admins read every recording; technicians their own, or all when granted
  ``read_all_recordings``.
* ``GET|POST /api/v1/keys``, ``DELETE /api/v1/keys/{key}``: your SSH public keys
  for the gateway.
"""

from __future__ import annotations

from aiohttp import web

from protocol.errors import InvalidMessage, NotFound

from ..models import SessionRecord, User, UserRole
from ..sshkeys import parse_public_key
from ..state import RELAY, RelayState
from .common import read_json, require_role, text, user_of

routes = web.RouteTableDef()


def _may_read_recording(user: User, record: SessionRecord) -> bool:
    if user.role in (UserRole.ADMIN, UserRole.AUDITOR) or user.read_all_recordings:
        return True
    return record.username == user.username


@routes.get("/api/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN, UserRole.AUDITOR)
    relay = request.app[RELAY]
    only = None if user.role in (UserRole.ADMIN, UserRole.AUDITOR) else user.username
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        raise InvalidMessage("limit must be an integer") from None
    records = await relay.store.list_sessions(limit=limit, username=only)
    live = {s.id: s for s in relay.broker.live()}
    sessions = []
    for record in records:
        view = record.public()
        if record.id in live:
            view.update(live[record.id].describe())
            view["live"] = True
        else:
            view["live"] = False
        sessions.append(view)
    return web.json_response({"sessions": sessions})


@routes.post("/api/v1/sessions/{id}/kill")
async def kill_session(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    session = await request.app[RELAY].broker.kill(request.match_info["id"], admin)
    return web.json_response({"ok": True, "session": session.id})


async def _recording(relay: RelayState, user: User, session_id: str) -> SessionRecord:
    record = await relay.store.get_session(session_id)
    if record is None or record.recording is None or not _may_read_recording(user, record):
        raise NotFound("no such recording")
    return record


@routes.get("/api/v1/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    user = user_of(request)
    relay = request.app[RELAY]
    records = await relay.store.list_sessions(limit=1000)
    visible = [r for r in records if r.recording is not None and _may_read_recording(user, r)]
    return web.json_response({"recordings": [r.public() for r in visible]})


@routes.get("/api/v1/recordings/{id}")
async def get_recording(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    relay = request.app[RELAY]
    record = await _recording(relay, user, request.match_info["id"])
    assert record.recording is not None
    path = (relay.config.data_dir / record.recording).resolve()
    if relay.config.data_dir.resolve() not in path.parents or not path.is_file():
        raise NotFound("recording file missing")
    kind = "x-helpline-screen" if path.suffix == ".screen" else "x-asciicast"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": f"application/{kind}",
            "Content-Disposition": f'attachment; filename="{record.id}{path.suffix}"',
        },
    )


@routes.get("/api/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    user = user_of(request)
    keys = await request.app[RELAY].store.list_ssh_keys(user.id)
    return web.json_response({"keys": [k.public() for k in keys]})


@routes.post("/api/v1/keys")
async def add_key(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    data = await read_json(request)
    line = text(data, "public_key", max_length=16384)
    key_type, blob, fingerprint, comment = parse_public_key(line)
    name = text(data, "name", max_length=64, default=comment or fingerprint[:20])
    key = await relay.store.add_ssh_key(user.id, name, f"{key_type} {blob}", fingerprint)
    await relay.audit.record(
        user.username, "key.add", user.username, fingerprint=fingerprint, name=name
    )
    return web.json_response({"key": key.public()}, status=201)


@routes.delete("/api/v1/keys/{key}")
async def remove_key(request: web.Request) -> web.Response:
    user = user_of(request)
    relay = request.app[RELAY]
    await relay.store.delete_ssh_key(user.id, request.match_info["key"])
    await relay.audit.record(
        user.username, "key.remove", user.username, key=request.match_info["key"][:128]
    )
    return web.json_response({"ok": True})
