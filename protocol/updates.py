"""Messages of an ``update`` channel, and the report of an agent that updated itself.

The relay opens an ``update`` channel to the agent (consent kind ``update``) with the
package's name, version and size in the channel's ``params``; once the agent accepts,
the package file arrives as the channel's data frames, under its flow control. The
agent answers with :class:`UpdateProgress` as it goes (received, verified, installing,
restarting) and ends with one :class:`UpdateResult` (and the install command's
:class:`~protocol.sessions.ExitStatus`, when one ran) before it closes the channel.

A package of kind ``agent`` replaces the agent: its result is ``restarting``, and the
verdict comes later, on the connection, as :class:`AgentUpdateReport`: ``healthy`` from
the new version once it is connected, or ``rolled-back`` from the old one, restored
because the new one did not come back in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .messages import Message, Role, Scope, _integer, _register, _spec, _text

__all__ = [
    "AgentUpdateOutcome",
    "AgentUpdateReport",
    "UpdateOutcome",
    "UpdateProgress",
    "UpdateResult",
    "UpdateStep",
]


class UpdateStep(StrEnum):
    RECEIVED = "received"  # the whole package file arrived
    VERIFIED = "verified"  # signature, payload hash and version checked
    INSTALLING = "installing"  # the install command runs


class UpdateOutcome(StrEnum):
    SUCCEEDED = "succeeded"  # the install command exited 0
    FAILED = "failed"  # it exited non-zero (or could not start)
    TIMEOUT = "timeout"  # it ran past its timeout and was killed
    REFUSED = "refused"  # the package was not accepted (signature, hash, version...)
    RESTARTING = "restarting"  # an agent update is installed: the verdict comes later


class AgentUpdateOutcome(StrEnum):
    HEALTHY = "healthy"
    ROLLED_BACK = "rolled-back"


_FROM_AGENT = frozenset({Role.AGENT, Role.RELAY})


@_register
@dataclass(frozen=True, slots=True)
class UpdateProgress(Message):
    TYPE = "update.progress"
    SCOPE = Scope.CHANNEL
    SENDERS = _FROM_AGENT
    step: str = _spec(_text(16, choices=frozenset(UpdateStep)))
    message: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class UpdateResult(Message):
    TYPE = "update.result"
    SCOPE = Scope.CHANNEL
    SENDERS = _FROM_AGENT
    outcome: str = _spec(_text(16, choices=frozenset(UpdateOutcome)))
    #: The install command's exit status; -1 when none ran or it was killed.
    exit_code: int = _spec(_integer(-1, 255), -1)
    message: str = _spec(_text(1024), "")
    #: The end of the install command's output (stdout and stderr together).
    log_tail: str = _spec(_text(4096), "")
    #: The version now installed under the package's name.
    version: str = _spec(_text(64), "")


@_register
@dataclass(frozen=True, slots=True)
class AgentUpdateReport(Message):
    """Agent to relay, after an agent update: did the new version come up, or was the old
    one restored?"""

    TYPE = "update.agent"
    SENDERS = frozenset({Role.AGENT})
    #: The update session that installed it (the relay finds its rollout by it).
    session: str = _spec(_text(64))
    package: str = _spec(_text(64))
    version: str = _spec(_text(64))
    outcome: str = _spec(_text(16, choices=frozenset(AgentUpdateOutcome)))
    message: str = _spec(_text(1024), "")
