"""Reading the audit log: entries with filters, paging, the recorded head, verification."""

from __future__ import annotations

from aiohttp import web

from protocol.errors import InvalidMessage

from ..models import UserRole
from ..state import RELAY
from .common import require_role

routes = web.RouteTableDef()

MAX_PAGE = 5000


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise InvalidMessage(f"{name} must be an integer") from None
    if not 0 <= value <= high:
        raise InvalidMessage(f"{name} must be between 0 and {high}")
    return value


@routes.get("/api/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN, UserRole.AUDITOR)
    relay = request.app[RELAY]
    entries = await relay.store.list_audit(
        after=_int_query(request, "after", 0, 2**62),
        limit=_int_query(request, "limit", 1000, MAX_PAGE) or 1,
        actor=request.query.get("actor"),
        action=request.query.get("action"),
        target=request.query.get("target"),
    )
    head = relay.audit.head()
    return web.json_response(
        {
            "entries": [e.public() for e in entries],
            "head": None if head is None else {"seq": head[0], "hash": head[1]},
        }
    )


@routes.get("/api/v1/audit/verify")
async def verify_audit(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN, UserRole.AUDITOR)
    report = await request.app[RELAY].audit.verify()
    return web.json_response(
        {
            "ok": report.ok,
            "checked": report.checked,
            "bad_seq": report.bad_seq,
            "reason": report.reason,
        }
    )
