"""Agent enrolment: an enrolment token and a CSR in, a client certificate out.

The relay, not the agent, decides the identity: a fresh device id goes into
the certificate whatever the CSR's subject says. The token is checked before
anything else, so that without a usable one nothing is learnt (not even which
device names exist); it is spent only after the CSR was signed. The agent has pinned our CA
by fingerprint before it sends anything here.
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from certs.authority import certificate_pem
from certs.fingerprints import fingerprint
from protocol.errors import AuthError, Conflict

from ..auth import hash_token
from ..models import Device, EnrolmentToken
from ..state import RELAY
from .common import NAME_PATTERN, client_address, read_json, text

routes = web.RouteTableDef()

_REFUSED = "enrolment token unknown, expired, revoked or used up"


def _unusable(record: EnrolmentToken, now: float) -> str:
    """Why ``record`` cannot enrol a device now ("" when it can)."""
    if record.revoked:
        return "revoked"
    if record.expires_at <= now:
        return "expired"
    if record.uses >= record.max_uses:
        return "used up"
    return ""


@routes.post("/api/v1/enroll")
async def enroll(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    data = await read_json(request)
    token = text(data, "token", max_length=128)
    csr = text(data, "csr", max_length=8192)
    name = text(data, "name", max_length=63, pattern=NAME_PATTERN)
    address = client_address(request)
    record = await relay.store.get_enrolment_token(hash_token(token))
    now = time.time()
    if record is None:
        await relay.audit.record(
            "anonymous", "device.enroll_refused", name, address=address, reason="unknown token"
        )
        raise AuthError(_REFUSED)
    # The token first: only a holder of a usable token may learn that a name is taken.
    unusable = _unusable(record, now)
    if unusable:
        await relay.audit.record(
            f"token:{record.id}", "device.enroll_refused", name, address=address, reason=unusable
        )
        raise AuthError(_REFUSED)
    if await relay.store.get_device_by_name(name) is not None:
        await relay.audit.record(
            f"token:{record.id}",
            "device.enroll_refused",
            name,
            address=address,
            reason="name taken",
        )
        raise Conflict(f"a device named {name!r} is already enrolled; choose another --name")
    device_id = uuid.uuid4().hex
    # Check the CSR before the token is spent: a bad request must not use it up.
    certificate = relay.pki.sign_agent(
        csr.encode(), device_id, relay.config.agents.certificate_days
    )
    if not await relay.store.use_enrolment_token(record.id, now):  # spent meanwhile
        reason = _unusable(record, now) or "used up"
        await relay.audit.record(
            f"token:{record.id}", "device.enroll_refused", name, address=address, reason=reason
        )
        raise AuthError(_REFUSED)
    device = Device(
        id=device_id,
        name=name,
        group=record.group,
        cert_fingerprint=fingerprint(certificate),
        cert_serial=format(certificate.serial_number, "x"),
        enrolled_at=now,
        revoked_at=None,
        last_seen=None,
    )
    await relay.store.create_device(device)
    await relay.audit.record(
        f"token:{record.id}",
        "device.enroll",
        name,
        device_id=device_id,
        group=record.group,
        address=address,
        fingerprint=device.cert_fingerprint,
    )
    return web.json_response(
        {
            "device_id": device_id,
            "name": name,
            "group": record.group,
            "certificate": certificate_pem(certificate).decode(),
            "ca": relay.pki.ca_pem,
        },
        status=201,
    )
