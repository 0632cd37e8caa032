"""The one exception tree of Helpline, and the stable error codes that cross the wire.

Every error that a peer may see carries a stable numeric ``code`` (a WebSocket
close code in the application range 4000-4999) and a *safe* message: text that
reveals nothing of the sender's internals. The same codes are used by the REST
API (``{"error": {"code": ..., "message": ...}}``) and by ``Goodbye`` and
``ChannelReject`` messages, so a client can rebuild the right exception class
with :func:`error_from_code`.

Peer faults and caller misuse are different branches:

* :class:`ProtocolError` and its subclasses: the *peer* sent something wrong.
  The connection that received it is closed with the error's code.
* :class:`UsageError`: *our own* code called the sans-I/O core wrongly (sent
  before the handshake, spent more credit than granted...). It never crosses
  the wire; it is a bug to fix, not input to handle.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AuthError",
    "Conflict",
    "ConsentDenied",
    "ErrorCode",
    "FlowControlError",
    "FrameError",
    "FrameTooLarge",
    "HandshakeError",
    "HelplineError",
    "InvalidMessage",
    "LimitExceeded",
    "NotFound",
    "NotPermitted",
    "ProtocolError",
    "RateLimited",
    "RemoteError",
    "TooManyAttempts",
    "UnknownChannel",
    "UnknownMessage",
    "UsageError",
    "error_from_code",
]


class ErrorCode(IntEnum):
    """Stable codes. Never renumber one: clients and recordings depend on them."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL = 4000
    MALFORMED_FRAME = 4001
    FRAME_TOO_LARGE = 4002
    UNKNOWN_MESSAGE = 4003
    UNSUPPORTED_VERSION = 4004
    INVALID_MESSAGE = 4005
    FLOW_CONTROL = 4006
    TOO_MANY_CHANNELS = 4007
    RATE_LIMITED = 4008
    UNEXPECTED_MESSAGE = 4009
    UNKNOWN_CHANNEL = 4010
    LIMIT_EXCEEDED = 4011
    AUTH_FAILED = 4401
    NOT_PERMITTED = 4403
    NOT_FOUND = 4404
    CONFLICT = 4409
    TOO_MANY_ATTEMPTS = 4429
    CONSENT_DENIED = 4450


class HelplineError(Exception):
    """Base of every error Helpline raises on purpose.

    ``str(error)`` is always the safe message, fit to show to a user or to
    send to a peer.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)


class ProtocolError(HelplineError):
    """The peer broke the protocol. The connection must be closed with ``code``."""

    code = ErrorCode.UNEXPECTED_MESSAGE
    default_message = "protocol error"


class FrameError(ProtocolError):
    """A frame's header or body could not be parsed."""

    code = ErrorCode.MALFORMED_FRAME
    default_message = "malformed frame"


class LimitExceeded(ProtocolError):
    """A frame, string, list or count went past a configured limit."""

    code = ErrorCode.LIMIT_EXCEEDED
    default_message = "limit exceeded"


class FrameTooLarge(LimitExceeded):
    """A frame header announced a body longer than this side accepts."""

    code = ErrorCode.FRAME_TOO_LARGE
    default_message = "frame too large"


class UnknownMessage(ProtocolError):
    """A control message of a type this side does not know."""

    code = ErrorCode.UNKNOWN_MESSAGE
    default_message = "unknown message type"


class InvalidMessage(ProtocolError):
    """A known control message with missing, extra or badly typed fields."""

    code = ErrorCode.INVALID_MESSAGE
    default_message = "invalid message"


class HandshakeError(ProtocolError):
    """The Hello exchange failed: wrong order, wrong role or unsupported version."""

    code = ErrorCode.UNSUPPORTED_VERSION
    default_message = "handshake failed"


class FlowControlError(ProtocolError):
    """The peer sent more data on a channel than the window it was granted."""

    code = ErrorCode.FLOW_CONTROL
    default_message = "flow control window exceeded"


class UnknownChannel(ProtocolError):
    """A frame named a channel that is not open."""

    code = ErrorCode.UNKNOWN_CHANNEL
    default_message = "unknown channel"


class RateLimited(ProtocolError):
    """The peer sent control messages faster than allowed."""

    code = ErrorCode.RATE_LIMITED
    default_message = "too many control messages"


class AuthError(HelplineError):
    """Authentication failed: bad password, code, token or certificate."""

    code = ErrorCode.AUTH_FAILED
    default_message = "authentication failed"


class NotPermitted(HelplineError):
    """Authenticated, but the role or grants do not allow this."""

    code = ErrorCode.NOT_PERMITTED
    default_message = "not permitted"


class NotFound(HelplineError):
    """The named object does not exist (or is not visible to the caller)."""

    code = ErrorCode.NOT_FOUND
    default_message = "not found"


class Conflict(HelplineError):
    """The request conflicts with the current state (a name taken, a token used up)."""

    code = ErrorCode.CONFLICT
    default_message = "conflict"


class TooManyAttempts(AuthError):
    """Throttled or locked out after repeated failures."""

    code = ErrorCode.TOO_MANY_ATTEMPTS
    default_message = "too many attempts; try again later"


class ConsentDenied(HelplineError):
    """The customer (or the agent's policy) refused the session."""

    code = ErrorCode.CONSENT_DENIED
    default_message = "consent denied"


class RemoteError(HelplineError):
    """An error reported by the peer with a code this side has no class for."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.remote_code = code


class UsageError(Exception):
    """Our own code misused the protocol core. Not a peer fault; never sent."""


_BY_CODE: dict[int, type[HelplineError]] = {
    ErrorCode.MALFORMED_FRAME: FrameError,
    ErrorCode.FRAME_TOO_LARGE: FrameTooLarge,
    ErrorCode.LIMIT_EXCEEDED: LimitExceeded,
    ErrorCode.UNKNOWN_MESSAGE: UnknownMessage,
    ErrorCode.UNSUPPORTED_VERSION: HandshakeError,
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.FLOW_CONTROL: FlowControlError,
    ErrorCode.TOO_MANY_CHANNELS: LimitExceeded,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.UNEXPECTED_MESSAGE: ProtocolError,
    ErrorCode.UNKNOWN_CHANNEL: UnknownChannel,
    ErrorCode.AUTH_FAILED: AuthError,
    ErrorCode.NOT_PERMITTED: NotPermitted,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.TOO_MANY_ATTEMPTS: TooManyAttempts,
    ErrorCode.CONSENT_DENIED: ConsentDenied,
}


def error_from_code(code: int, message: str) -> HelplineError:
    """Rebuild the exception a peer reported with ``code`` and ``message``."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(code, message)
    error = cls(message)
    error.code = ErrorCode(code)  # several codes share a class; keep the one received
    return error
