"""Helpline's wire protocol, sans I/O: frames, typed messages, channels, limits, errors.

Nothing here opens a socket, starts a task or reads a file. See
:class:`protocol.connection.Connection` for the engine every component
drives, and ``DESIGN.md`` section 2 for the rules it follows.
"""

from .connection import ABNORMAL_CLOSURE, PROTOCOL_VERSION, Connection, ConnectionState
from .errors import ErrorCode, HelplineError, ProtocolError, UsageError, error_from_code
from .events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    ConnectionClosed,
    CreditAvailable,
    Event,
)
from .files import FileDone, FileOp, FileReply, FileRequest
from .limits import Limits
from .messages import (
    DeviceStatus,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Inventory,
    Message,
    Role,
)
from .screen import ScreenInfo, TileStreamParser
from .sessions import (
    ChannelEof,
    ConsentDecision,
    ConsentHow,
    EndCode,
    ExitStatus,
    SessionKind,
    SessionRequest,
    SessionState,
    SessionStatus,
    TerminalResize,
)
from .updates import AgentUpdateReport, UpdateProgress, UpdateResult

__all__ = [
    "ABNORMAL_CLOSURE",
    "PROTOCOL_VERSION",
    "AgentUpdateReport",
    "ChannelAccepted",
    "ChannelClosed",
    "ChannelData",
    "ChannelEof",
    "ChannelMessage",
    "ChannelOpened",
    "ChannelRejected",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "ConsentDecision",
    "ConsentHow",
    "CreditAvailable",
    "DeviceStatus",
    "EndCode",
    "ErrorCode",
    "Event",
    "ExitStatus",
    "FileDone",
    "FileOp",
    "FileReply",
    "FileRequest",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "HelplineError",
    "Inventory",
    "Limits",
    "Message",
    "ProtocolError",
    "Role",
    "ScreenInfo",
    "SessionKind",
    "SessionRequest",
    "SessionState",
    "SessionStatus",
    "TerminalResize",
    "TileStreamParser",
    "UpdateProgress",
    "UpdateResult",
    "UsageError",
    "error_from_code",
]
