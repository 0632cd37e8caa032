"""Plain records the store returns and the API serialises. No behaviour here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class UserRole(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    AUDITOR = "auditor"


@dataclass(slots=True)
class User:
    id: int
    username: str
    full_name: str
    role: UserRole
    password_hash: str
    totp_secret: str | None
    totp_required: bool
    totp_last_step: int
    failed_attempts: int
    locked_until: float | None
    disabled: bool
    created_at: float
    read_all_recordings: bool = False

    def public(self) -> dict[str, Any]:
        """What the API shows of a user: never the hash or the TOTP secret."""
        return {
            "read_all_recordings": self.read_all_recordings,
            "username": self.username,
            "full_name": self.full_name,
            "role": self.role.value,
            "totp_required": self.totp_required,
            "totp_enrolled": self.totp_secret is not None,
            "locked_until": self.locked_until,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class Group:
    id: int
    name: str
    created_at: float

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at}


@dataclass(slots=True)
class Device:
    id: str
    name: str
    group: str
    cert_fingerprint: str
    cert_serial: str
    enrolled_at: float
    revoked_at: float | None
    last_seen: float | None
    inventory: dict[str, Any] = field(default_factory=dict)

    def public(self, *, online: bool) -> dict[str, Any]:
        record = asdict(self)
        record.pop("cert_serial")
        record["online"] = online
        return record


@dataclass(slots=True)
class EnrolmentToken:
    id: int
    token_hash: str
    group: str
    expires_at: float
    max_uses: int
    uses: int
    created_by: str
    created_at: float
    revoked: bool

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "expires_at": self.expires_at,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }


@dataclass(slots=True)
class ApiToken:
    token_hash: str
    user_id: int
    created_at: float
    expires_at: float


@dataclass(slots=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev: str
    hash: str

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SessionRecord:
    id: str
    user_id: int | None
    username: str
    device_id: str
    device_name: str
    kind: str
    reason: str
    via: str
    state: str
    requested_at: float
    consent: str | None = None
    end_reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    exit_code: int | None = None
    recording: str | None = None
    recording_sha256: str | None = None

    def public(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("user_id")
        record["has_recording"] = record.pop("recording") is not None
        end = self.ended_at
        start = self.started_at
        record["duration"] = None if start is None or end is None else round(end - start, 3)
        return record


@dataclass(slots=True)
class SshKey:
    id: int
    user_id: int
    name: str
    public_key: str
    fingerprint: str
    created_at: float

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "public_key": self.public_key,
            "created_at": self.created_at,
        }
