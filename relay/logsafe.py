"""Log lines that untrusted text cannot forge: one record, one line.

Login names, device names, reasons and error texts from agents and customers end up
in log messages. A CR or LF in them would start what looks like a new record of the
relay's own ("...\\r\\n2026-01-01 level=INFO logger=helpline.audit ..."), and escape
sequences could rewrite a terminal showing the log. :func:`printable` escapes such
characters repr-style; :class:`SafeFormatter` applies it to the whole message of
every record, after the arguments are interpolated, so no call site has to remember
(and nothing is escaped twice). Tracebacks keep their line structure, but every
line of them is escaped and indented, so none can pass for a record either.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

__all__ = ["SafeFormatter", "printable"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Unicode categories written as escapes: controls (C0, DEL, C1), format characters
#: (bidirectional overrides, zero-width...), line and paragraph separators, unassigned.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Cs"})
#: Continuation lines of a traceback start with this, never at column 0.
TRACEBACK_INDENT = "    | "


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` on one line: CR, LF, tabs, other control and format characters and the
    backslash written as escapes (``\\r``, ``\\n``, ``\\x1b``, ``\\u202e``, ``\\\\``)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(char) for char in text)


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose records are one line each, whatever their
    arguments held (see the module docstring)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join(TRACEBACK_INDENT + printable(line) for line in text.split("\n"))
