"""Shell session recordings in asciicast v2, written by the relay as the session runs.

One JSON header line (size, start time, title, TERM, plus who and where), then
one JSON line per event: ``[seconds, "o", text]`` for output, ``[seconds, "r",
"COLSxROWS"]`` for a resize, and ``[seconds, "i", text]`` for input only when
the relay is configured to record input (off by default: input holds
passwords). Each event is flushed to the OS as it is written, so a relay
killed mid-session leaves a readable prefix that ``asciinema cat`` plays.
When the session closes, the file's SHA-256 goes into the audit chain.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, TextIO


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AsciicastRecorder:
    def __init__(
        self,
        path: Path,
        *,
        cols: int,
        rows: int,
        title: str,
        term: str,
        technician: str,
        device: str,
        session_id: str,
        record_input: bool = False,
        clock: Any = time.monotonic,
    ) -> None:
        self.path = path
        self.record_input = record_input
        self._clock = clock
        self._start = clock()
        self._output_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._input_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: TextIO | None = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
            "title": title,
            "env": {"TERM": term},
            "helpline": {"session": session_id, "technician": technician, "device": device},
        }
        self._write(header)

    def _elapsed(self) -> float:
        elapsed: float = self._clock() - self._start
        return round(elapsed, 6)

    def _write(self, record: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def output(self, data: bytes) -> None:
        text = self._output_decoder.decode(data)
        if text:
            self._write([self._elapsed(), "o", text])

    def input(self, data: bytes) -> None:
        if self.record_input:
            text = self._input_decoder.decode(data)
            if text:
                self._write([self._elapsed(), "i", text])

    def resize(self, cols: int, rows: int) -> None:
        self._write([self._elapsed(), "r", f"{cols}x{rows}"])

    def close(self) -> str:
        """Finish the file; return its SHA-256 (hex)."""
        if self._file is not None:
            tail = self._output_decoder.decode(b"", final=True)
            if tail:
                self._write([self._elapsed(), "o", tail])
            self._file.close()
            self._file = None
        return file_sha256(self.path)
