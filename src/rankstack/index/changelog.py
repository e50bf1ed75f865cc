"""The append-only change log of a live index: one checksummed JSON record per line, fsync'd.

A change is acknowledged only after its line is on disk, so it survives a crash. A crash in the
middle of a write leaves a torn last line; its checksum fails, and replay stops before it (the
writer truncates it away when it next opens the log).
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

LOG_NAME = "changes.log"


def _encode(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def read_log(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Intact records from byte ``start`` on, and the offset where they end (after it: a torn write)."""
    if not path.exists():
        return [], 0
    records: list[dict[str, Any]] = []
    valid = start
    with open(path, "rb") as handle:
        handle.seek(start)
        for line in handle:
            if not line.endswith(b"\n") or len(line) < 10:
                break
            checksum, payload = line[:8], line[9:-1]
            try:
                if int(checksum, 16) != zlib.crc32(payload):
                    break
                records.append(json.loads(payload))
            except ValueError:
                break
            valid += len(line)
    return records, valid


class ChangeLogWriter:
    """Appends records durably. Only the single writer (see rankstack.index.live) holds one."""

    def __init__(self, path: Path) -> None:
        _, valid = read_log(path)
        self.path = path
        self._handle = open(path, "ab")
        if self._handle.tell() != valid:  # drop a torn tail left by a crash
            self._handle.truncate(valid)
            self._handle.seek(valid)
            os.fsync(self._handle.fileno())

    def append(self, records: list[dict[str, Any]]) -> None:
        self._handle.write(b"".join(_encode(r) for r in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
