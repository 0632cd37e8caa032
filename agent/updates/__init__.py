"""Software updates on the agent: receive a package, verify it against the pinned publisher
keys, ask consent, install it with a timeout and report; and the agent's own update with a
supervisor that rolls back a version that does not come back healthy."""

from .service import UpdateService

__all__ = ["UpdateService"]
