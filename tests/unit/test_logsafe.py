"""relay.logsafe: untrusted text in a log record stays on that record's one line."""

from __future__ import annotations

import io
import logging

from relay.logsafe import TRACEBACK_INDENT, SafeFormatter, printable


def test_printable_escapes_line_breaks_controls_and_format_characters() -> None:
    assert printable("desk-1 é ü 東京") == "desk-1 é ü 東京"
    assert printable("bob\r\nINFO forged") == "bob\\r\\nINFO forged"
    assert printable("a\tb\x1b[2J\x7f\x85") == "a\\tb\\x1b[2J\\x7f\\x85"
    assert printable("x\u2028y\u2029z\u202eevil\u200b") == "x\\u2028y\\u2029z\\u202eevil\\u200b"
    # The backslash too, so an escape in the log can only come from printable itself.
    assert printable("C:\\temp\\n") == "C:\\\\temp\\\\n"


def _logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.logsafe")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_every_record_is_one_line_and_tracebacks_cannot_pass_for_records() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    logger.info("login of %s refused", "bob\r\nINFO forged")
    try:
        raise ValueError("agent says\nINFO forged too")
    except ValueError:
        logger.exception("pull of %r failed", "x")
    lines = stream.getvalue().split("\n")
    assert lines[0] == "INFO login of bob\\r\\nINFO forged refused"
    assert lines[1] == "ERROR pull of 'x' failed"
    rest = [line for line in lines[2:] if line]
    assert rest and all(line.startswith(TRACEBACK_INDENT) for line in rest)
    assert not [line for line in lines if line.startswith("INFO forged")]
