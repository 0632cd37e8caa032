"""The agents' endpoint: ``GET /agent/v1/connect`` upgraded to a WebSocket, mTLS only.

The TLS handshake already refused certificates from another CA and revoked
ones (CRL). Here the certificate's device id must name an enrolled,
unrevoked device whose certificate fingerprint matches. Then the protocol
runs: Hello, inventory, heartbeats. Anything malformed closes this one
connection with the error's code; nothing an agent sends reaches another.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from cryptography import x509

from certs.authority import device_id_of
from certs.fingerprints import fingerprint
from protocol import Connection, Event, Hello, Inventory, Limits, Role
from protocol.errors import AuthError, HandshakeError
from protocol.frames import websocket_message_limit
from protocol.updates import AgentUpdateReport

from .links import AgentLink, run_link
from .state import RELAY, VERSION, RelayState

log = logging.getLogger("helpline.agents")

routes = web.RouteTableDef()


def peer_identity(request: web.Request) -> tuple[str, str]:
    """The device id and certificate fingerprint the client proved in the TLS handshake.

    The parsed certificate is not kept: it would live as long as the connection.
    """
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if der is None:
        raise AuthError("agents must present their client certificate")
    certificate = x509.load_der_x509_certificate(der)
    try:
        return device_id_of(certificate), fingerprint(certificate)
    except ValueError:
        raise AuthError("certificate does not name a device") from None


#: Control messages per second (and burst) an agent or console may send. A session costs
#: a handful (consent, accept, exit status, close...); these leave room for busy devices
#: and scripted technicians while still cutting off a peer that floods.
PEER_CONTROL_RATE = 1000.0
PEER_CONTROL_BURST = 4000


def protocol_limits(relay: RelayState) -> Limits:
    return Limits(
        max_frame_size=relay.config.agents.max_frame_size,
        control_rate=PEER_CONTROL_RATE,
        control_burst=PEER_CONTROL_BURST,
    )


@routes.get("/agent/v1/connect")
async def agent_connect(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    device_id, cert_fingerprint = peer_identity(request)
    device = await relay.store.get_device(device_id)
    address = request.remote or "unknown"
    if (
        device is None
        or device.revoked_at is not None
        or device.cert_fingerprint != cert_fingerprint
    ):
        await relay.audit.record(
            f"device:{device_id}",
            "agent.refused",
            device_id,
            address=address,
            reason="unknown or revoked device",
        )
        raise AuthError("device unknown or revoked")
    limits = protocol_limits(relay)
    ws = web.WebSocketResponse(
        max_msg_size=websocket_message_limit(limits.max_frame_size), compress=False, autoping=True
    )
    await ws.prepare(request)
    conn = Connection(Role.RELAY, limits=limits, software=f"helpline-relay/{VERSION}")
    link = AgentLink(
        ws=ws, conn=conn, device_id=device.id, name=device.name, group=device.group, address=address
    )

    logged_inventory: list[bool] = []

    async def on_event(event: Event) -> None:
        link.last_seen = time.time()
        if getattr(event, "channel", None) is not None:
            await relay.broker.from_agent(link, event)
        elif isinstance(event, Hello):
            if event.role != Role.AGENT:
                raise HandshakeError("this endpoint is for agents")
            await relay.presence.agent_online(link)
            await relay.store.update_device(device.id, last_seen=link.last_seen)
        elif isinstance(event, Inventory):
            if not logged_inventory:  # once per connection: no log flood
                logged_inventory.append(True)
                log.info(
                    "%s is host %s, %s, user %s, agent %s",
                    link,
                    event.hostname,
                    event.os,
                    event.user,
                    event.agent_version,
                )  # untrusted text: SafeFormatter (relay.logsafe) escapes it
            inventory = {
                "hostname": event.hostname,
                "os": event.os,
                "user": event.user,
                "agent_version": event.agent_version,
                "addresses": list(event.addresses),
            }
            await relay.store.update_device(device.id, inventory=inventory)
            relay.presence.inventory_changed(link)
        elif isinstance(event, AgentUpdateReport):
            await relay.updates.agent_report(link, event)

    try:
        await run_link(
            link, on_event, relay.presence.watchdog, relay.config.agents.heartbeat_timeout
        )
    finally:
        await relay.broker.agent_lost(link)
        await relay.presence.agent_offline(link)
        try:
            await relay.store.update_device(device.id, last_seen=link.last_seen)
        except Exception:  # the store may be closing during shutdown
            log.debug("could not record last_seen for %s", device.id, exc_info=True)
    return ws
