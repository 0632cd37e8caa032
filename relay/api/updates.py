"""Update pushes over REST: upload a signed package, start a rollout, follow it, cancel it.

Who may do what (checked here, on the relay, for every call; refusals are 403s, audited):

* upload a package, start a rollout: admins (any device or group), technicians (a
  device they may open sessions on, or a group they hold a grant on). Each device is
  authorised again, as the pushing user, when its update session is opened;
* list and read rollouts: admins all of them; technicians the ones they pushed;
* cancel: admins, or the technician who pushed it. Auditors do none of this: every
  step is in the audit log for them.

The relay checks a package's form (header, canonical manifest, a signature present,
payload matching the manifest) so mistakes fail early with a clear message, but it
cannot tell whether an agent will trust the signer: only the agent's pinned keys decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from certs.packages import PackageError, PackageHeader, read_header_file
from protocol.errors import InvalidMessage, LimitExceeded, NotFound, NotPermitted

from ..models import User, UserRole
from ..state import RELAY, RelayState
from ..updates.engine import package_path
from ..updates.models import Rollout, RolloutDevice, RolloutState
from .common import NAME_PATTERN, integer, read_json, require_role, text
from .devices import find_device

routes = web.RouteTableDef()

#: Largest package the relay stores, in bytes.
MAX_PACKAGE_SIZE = 256 * 1024 * 1024
#: Install timeout (seconds) when the push names none, and the longest allowed.
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 24 * 3600
#: How long a rollout waits for offline devices by default (seconds), and at most.
DEFAULT_EXPIRY = 7 * 24 * 3600
MAX_EXPIRY = 90 * 24 * 3600
_SHA256 = frozenset("0123456789abcdef")


def _check_payload(path: Path) -> PackageHeader:
    header = read_header_file(path)
    if header.signer is None:
        raise PackageError("the package is not signed: sign it with 'helpline package sign'")
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        stream.seek(header.payload_offset)
        while chunk := stream.read(1024 * 1024):
            size += len(chunk)
            hasher.update(chunk)
    manifest = header.manifest
    if size != manifest.payload_size or hasher.hexdigest() != manifest.payload_sha256:
        raise PackageError("the package's payload does not match its manifest")
    return header


@routes.post("/api/v1/updates/packages")
async def upload_package(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    directory = relay.config.data_dir / "packages"
    directory.mkdir(mode=0o700, exist_ok=True)
    partial = directory / f".upload-{secrets.token_hex(8)}"
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(partial, "xb") as target:  # noqa: ASYNC230 - writes go to a thread
            async for chunk in request.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > MAX_PACKAGE_SIZE:
                    raise LimitExceeded(f"packages are limited to {MAX_PACKAGE_SIZE} bytes")
                hasher.update(chunk)
                await asyncio.to_thread(target.write, chunk)
        try:
            header = await asyncio.to_thread(_check_payload, partial)
        except PackageError as error:
            raise InvalidMessage(f"not a usable package: {error}") from None
        sha256 = hasher.hexdigest()
        os.replace(partial, package_path(relay, sha256))
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    manifest = header.manifest
    await relay.audit.record(
        user.username,
        "update.upload",
        f"{manifest.name} {manifest.version}",
        sha256=sha256,
        size=size,
        kind=manifest.kind,
        signer=header.signer,
    )
    return web.json_response(
        {"sha256": sha256, "size": size, "signer": header.signer, "manifest": manifest.to_dict()}
    )


async def _targets(
    relay: RelayState, user: User, data: dict[str, Any]
) -> tuple[str, str, list[tuple[str, str]]]:
    device_key = data.get("device")
    group = data.get("group")
    if (device_key is None) == (group is None):
        raise InvalidMessage("name exactly one of 'device' or 'group'")
    if device_key is not None:
        key = text(data, "device", max_length=255)
        device = await find_device(relay, user, key)
        if device.revoked_at is not None:
            raise NotFound(f"device {device.name!r} is revoked")
        return "device", device.name, [(device.id, device.name)]
    name = text(data, "group", max_length=63, pattern=NAME_PATTERN)
    if user.role is not UserRole.ADMIN and name not in await relay.store.granted_groups(user.id):
        raise NotPermitted(f"you hold no grant on group {name!r}")
    if await relay.store.get_group(name) is None:
        raise NotFound(f"no group {name!r}")
    devices = sorted(
        (d.name, d.id)
        for d in await relay.store.list_devices()
        if d.group == name and d.revoked_at is None
    )
    if not devices:
        raise InvalidMessage(f"group {name!r} has no devices")
    return "group", name, [(device_id, device_name) for device_name, device_id in devices]


def _batch_size(data: dict[str, Any], count: int) -> int:
    if "batch" in data and "percent" in data:
        raise InvalidMessage("give --batch or --percent, not both")
    if "percent" in data:
        percent = integer(data, "percent", default=100, low=1, high=100)
        return max(1, math.ceil(count * percent / 100))
    return integer(data, "batch", default=count, low=1, high=100_000)


@routes.post("/api/v1/updates/rollouts")
async def create_rollout(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    data = await read_json(request)
    sha256 = text(data, "package", max_length=64)
    if len(sha256) != 64 or not set(sha256) <= _SHA256:
        raise InvalidMessage("'package' must be the SHA-256 the upload returned")
    path = package_path(relay, sha256)
    if not path.exists():
        raise NotFound("no such package on this relay: upload it first")
    header = await asyncio.to_thread(read_header_file, path)
    target_kind, target, devices = await _targets(relay, user, data)
    batch = _batch_size(data, len(devices))
    max_failures = integer(data, "max_failures", default=0, low=0, high=100_000)
    timeout = integer(data, "timeout", default=DEFAULT_TIMEOUT, low=1, high=MAX_TIMEOUT)
    expires = integer(data, "expires", default=DEFAULT_EXPIRY, low=1, high=MAX_EXPIRY)
    reason = text(data, "reason", max_length=1024, default="")
    downgrade = data.get("downgrade", False)
    if not isinstance(downgrade, bool):
        raise InvalidMessage("'downgrade' must be true or false")
    now = time.time()
    manifest = header.manifest
    rollout = Rollout(
        id=uuid.uuid4().hex,
        package_sha256=sha256,
        package_name=manifest.name,
        package_version=manifest.version,
        package_kind=manifest.kind,
        signer=header.signer or "",
        size=path.stat().st_size,
        created_by=user.username,
        created_by_id=user.id,
        target_kind=target_kind,
        target=target,
        batch_size=batch,
        max_failures=max_failures,
        downgrade=downgrade,
        reason=reason,
        timeout=float(timeout),
        state=RolloutState.RUNNING,
        created_at=now,
        expires_at=now + expires,
    )
    members = [
        RolloutDevice(rollout.id, device_id, name, position, position // batch)
        for position, (device_id, name) in enumerate(devices)
    ]
    await relay.audit.record(
        user.username,
        "update.push",
        f"{target_kind}:{target}",
        rollout=rollout.id,
        package=manifest.name,
        version=manifest.version,
        kind=manifest.kind,
        sha256=sha256,
        signer=rollout.signer,
        devices=len(members),
        batch=batch,
        max_failures=max_failures,
        downgrade=downgrade,
        reason=reason,
    )
    await relay.updates.begin(rollout, members)
    return web.json_response(await _view(relay, rollout.id), status=201)


async def _rollout_for(relay: RelayState, user: User, rollout_id: str) -> Rollout:
    rollout = await relay.store.get_rollout(rollout_id[:64])
    if rollout is None or (user.role is not UserRole.ADMIN and rollout.created_by != user.username):
        raise NotFound("no rollout with that id")
    return rollout


async def _view(relay: RelayState, rollout_id: str) -> dict[str, Any]:
    run = relay.updates.runs.get(rollout_id)
    rollout = run.rollout if run is not None else await relay.store.get_rollout(rollout_id)
    assert rollout is not None
    devices = await relay.store.rollout_devices(rollout_id)
    counts: dict[str, int] = {}
    for device in devices:
        counts[device.state.value] = counts.get(device.state.value, 0) + 1
    return {**rollout.public(), "counts": counts, "devices": [d.public() for d in devices]}


@routes.get("/api/v1/updates/rollouts")
async def list_rollouts(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    mine = None if user.role is UserRole.ADMIN else user.username
    rollouts = await relay.store.list_rollouts(limit=200, created_by=mine)
    views = []
    for rollout in rollouts:
        devices = await relay.store.rollout_devices(rollout.id)
        counts: dict[str, int] = {}
        for device in devices:
            counts[device.state.value] = counts.get(device.state.value, 0) + 1
        views.append({**rollout.public(), "counts": counts})
    return web.json_response({"rollouts": views})


@routes.get("/api/v1/updates/rollouts/{id}")
async def get_rollout(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    rollout = await _rollout_for(relay, user, request.match_info["id"])
    return web.json_response(await _view(relay, rollout.id))


@routes.post("/api/v1/updates/rollouts/{id}/cancel")
async def cancel_rollout(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    rollout = await _rollout_for(relay, user, request.match_info["id"])
    if rollout.state is RolloutState.RUNNING:
        await relay.updates.cancel(rollout.id, user)
    return web.json_response(await _view(relay, rollout.id))
