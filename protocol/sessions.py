"""Messages of a session: asking for one, its status, consent, and the in-channel
controls of a shell (resize, end of input, exit status).

The flow (DESIGN section 4): a console sends :class:`SessionRequest` on the
connection; the relay authorises it and opens a channel to the agent whose
``params`` name the technician and the reason; the agent decides consent,
reports it with :class:`ConsentDecision`, and accepts or rejects the channel.
The relay tells the console where things stand with :class:`SessionStatus`
and, once granted, opens the same channel id to the console. Data frames on
that channel are the session's bytes; the messages below travel beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from .messages import (
    Message,
    Role,
    Scope,
    _flag,
    _integer,
    _register,
    _spec,
    _text,
    _text_map,
)

__all__ = [
    "ChannelEof",
    "ConsentDecision",
    "ConsentHow",
    "EndCode",
    "ExitStatus",
    "SessionKind",
    "SessionRequest",
    "SessionState",
    "SessionStatus",
    "TerminalResize",
]


class SessionKind(StrEnum):
    SHELL = "shell"
    VIEW = "view"
    CONTROL = "control"
    FILES = "files"
    UPDATE = "update"


class SessionState(StrEnum):
    REQUESTED = "requested"
    WAITING = "waiting"  # for the customer's consent
    ACTIVE = "active"
    DENIED = "denied"
    FAILED = "failed"
    ENDED = "ended"


class ConsentHow(StrEnum):
    """How the agent reached its decision."""

    ALLOW = "allow"  # policy: unattended
    NOTIFY = "notify"  # policy: allowed, user shown a notice
    PROMPT = "prompt"  # the user answered the prompt
    TIMEOUT = "timeout"  # nobody answered in time: denied
    NO_USER = "no-user"  # nobody to ask (no display, no terminal): denied


class EndCode(IntEnum):
    """Why a session channel closed (``ChannelClose.code``). Stable, like ErrorCode."""

    NORMAL = 1000  # the shell exited, or the technician ended it
    RELAY_SHUTDOWN = 1001
    CUSTOMER = 4460
    ADMIN = 4461
    AGENT_LOST = 4462
    TECHNICIAN_LOST = 4463


_TO_AGENT = frozenset({Role.CONSOLE, Role.RELAY})
_FROM_AGENT = frozenset({Role.AGENT, Role.RELAY})
_ANY = frozenset(Role)


@_register
@dataclass(frozen=True, slots=True)
class SessionRequest(Message):
    """Console to relay: open a session of ``kind`` on ``device`` (a name or id)."""

    TYPE = "session.request"
    SENDERS = frozenset({Role.CONSOLE})
    request: int = _spec(_integer(0, 2**31 - 1))
    device: str = _spec(_text(255))
    kind: str = _spec(_text(32, choices=frozenset(SessionKind)))
    reason: str = _spec(_text(1024), "")
    params: Mapping[str, str] = _spec(_text_map(1024), {})


@_register
@dataclass(frozen=True, slots=True)
class SessionStatus(Message):
    """Relay to console: how a request stands. Granted sessions arrive as a ChannelOpen."""

    TYPE = "session.status"
    SENDERS = frozenset({Role.RELAY})
    request: int = _spec(_integer(0, 2**31 - 1))
    state: str = _spec(_text(16, choices=frozenset(SessionState)))
    session: str = _spec(_text(64), "")
    code: int = _spec(_integer(0, 4999), 0)
    message: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class ConsentDecision(Message):
    """Agent to relay, before it accepts or rejects a session channel."""

    TYPE = "consent"
    SCOPE = Scope.CHANNEL
    SENDERS = frozenset({Role.AGENT})
    granted: bool = _spec(_flag())
    how: str = _spec(_text(16, choices=frozenset(ConsentHow)))
    #: The local account that answered a prompt, if any.
    by: str = _spec(_text(255), "")


@_register
@dataclass(frozen=True, slots=True)
class TerminalResize(Message):
    TYPE = "resize"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    cols: int = _spec(_integer(1, 1000))
    rows: int = _spec(_integer(1, 1000))


@_register
@dataclass(frozen=True, slots=True)
class ChannelEof(Message):
    """The sender will send no more data on this channel (the channel stays open)."""

    TYPE = "eof"
    SCOPE = Scope.CHANNEL
    SENDERS = _ANY


@_register
@dataclass(frozen=True, slots=True)
class ExitStatus(Message):
    """The remote command ended: its exit code, or the signal that killed it."""

    TYPE = "exit"
    SCOPE = Scope.CHANNEL
    SENDERS = _FROM_AGENT
    code: int = _spec(_integer(-1, 255))
    signal: str = _spec(_text(32), "")
