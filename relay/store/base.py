"""The store interface every backend implements (SQLite now, PostgreSQL later).

All methods are coroutines so that a network database fits the same shape.
Uniqueness violations raise :class:`protocol.errors.Conflict`; lookups of
missing rows return ``None`` (or raise :class:`protocol.errors.NotFound` for
updates and deletes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ..models import (
    ApiToken,
    AuditEntry,
    Device,
    EnrolmentToken,
    Group,
    SessionRecord,
    SshKey,
    User,
    UserRole,
)
from .updates import RolloutStore


class Store(RolloutStore, ABC):
    # users
    @abstractmethod
    async def create_user(
        self,
        username: str,
        full_name: str,
        role: UserRole,
        password_hash: str,
        totp_secret: str | None,
        totp_required: bool,
    ) -> User: ...

    @abstractmethod
    async def get_user(self, username: str) -> User | None: ...

    @abstractmethod
    async def get_user_by_id(self, user_id: int) -> User | None: ...

    @abstractmethod
    async def list_users(self) -> list[User]: ...

    @abstractmethod
    async def update_user(self, user_id: int, **fields: Any) -> None: ...

    @abstractmethod
    async def delete_user(self, user_id: int) -> None: ...

    @abstractmethod
    async def claim_login_attempt(
        self, user_id: int, now: float, threshold: int, lockout_seconds: float
    ) -> int | None:
        """Count one login attempt against the account before its password or code is
        checked, atomically: None when it is locked (nothing counted), else the attempt's
        number since the last success. The attempt that reaches ``threshold`` locks the
        account until ``now + lockout_seconds`` (a success clears it); an expired lock
        starts the count again. So parallel guesses never exceed ``threshold``."""

    @abstractmethod
    async def claim_totp_step(self, user_id: int, step: int) -> bool:
        """Record ``step`` as the account's last used TOTP step if it is newer than the one
        recorded, in one compare-and-set: of any number of callers racing with the same
        step, exactly one gets True."""

    # groups and grants
    @abstractmethod
    async def create_group(self, name: str) -> Group: ...

    @abstractmethod
    async def get_group(self, name: str) -> Group | None: ...

    @abstractmethod
    async def list_groups(self) -> list[Group]: ...

    @abstractmethod
    async def delete_group(self, name: str) -> None: ...

    @abstractmethod
    async def add_grant(self, user_id: int, group: str) -> None: ...

    @abstractmethod
    async def remove_grant(self, user_id: int, group: str) -> None: ...

    @abstractmethod
    async def list_grants(self) -> list[tuple[str, str]]: ...

    @abstractmethod
    async def granted_groups(self, user_id: int) -> set[str]: ...

    # devices
    @abstractmethod
    async def create_device(self, device: Device) -> None: ...

    @abstractmethod
    async def get_device(self, device_id: str) -> Device | None: ...

    @abstractmethod
    async def get_device_by_name(self, name: str) -> Device | None: ...

    @abstractmethod
    async def list_devices(self) -> list[Device]: ...

    @abstractmethod
    async def update_device(self, device_id: str, **fields: Any) -> None: ...

    @abstractmethod
    async def revoked_serials(self) -> list[tuple[str, float]]: ...

    # enrolment tokens
    @abstractmethod
    async def create_enrolment_token(
        self, token_hash: str, group: str, expires_at: float, max_uses: int, created_by: str
    ) -> EnrolmentToken: ...

    @abstractmethod
    async def get_enrolment_token(self, token_hash: str) -> EnrolmentToken | None: ...

    @abstractmethod
    async def list_enrolment_tokens(self) -> list[EnrolmentToken]: ...

    @abstractmethod
    async def use_enrolment_token(self, token_id: int, now: float) -> bool:
        """Count one use, atomically; False if expired, revoked or used up."""

    @abstractmethod
    async def revoke_enrolment_token(self, token_id: int) -> None: ...

    # api tokens
    @abstractmethod
    async def add_api_token(self, token: ApiToken) -> None: ...

    @abstractmethod
    async def get_api_token(self, token_hash: str) -> ApiToken | None: ...

    @abstractmethod
    async def delete_api_token(self, token_hash: str) -> None: ...

    @abstractmethod
    async def delete_user_tokens(self, user_id: int) -> None: ...

    # audit
    @abstractmethod
    async def append_audit(
        self, ts: str, actor: str, action: str, target: str, details: dict[str, Any]
    ) -> AuditEntry:
        """Append one entry, chaining it to the last one atomically."""

    @abstractmethod
    async def list_audit(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> Sequence[AuditEntry]: ...

    # sessions
    @abstractmethod
    async def create_session(self, record: SessionRecord) -> None: ...

    @abstractmethod
    async def update_session(self, session_id: str, **fields: Any) -> None: ...

    @abstractmethod
    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    async def list_sessions(
        self, *, limit: int = 100, username: str | None = None, unfinished: bool = False
    ) -> list[SessionRecord]: ...

    # ssh keys
    @abstractmethod
    async def add_ssh_key(
        self, user_id: int, name: str, public_key: str, fingerprint: str
    ) -> SshKey: ...

    @abstractmethod
    async def find_ssh_key(self, fingerprint: str) -> SshKey | None: ...

    @abstractmethod
    async def list_ssh_keys(self, user_id: int) -> list[SshKey]: ...

    @abstractmethod
    async def delete_ssh_key(self, user_id: int, key: str) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...
