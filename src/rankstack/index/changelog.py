"""The append-only change log of a live index: one checksummed JSON record per line, fsync'd.

A change is acknowledged only after its line is on disk, so it survives a crash. Each record carries a
sequence number (``seq``, 1, 2, ...), so a lost or reordered line is noticed too.

Two kinds of bad bytes are told apart, because only one of them may be thrown away:

- a **torn tail**: the last line is incomplete (no newline). A crash in the middle of a write leaves
  one; it was never acknowledged, so the writer trims it when it next opens the log.
- **damage**: a complete line that fails its checksum, does not parse, or breaks the sequence, or a log
  shorter than what was acknowledged (``changes.head`` records the last acknowledged sequence number
  and size after every append, so a truncation cannot pass for a torn write). Records
  after it may be intact and acknowledged, so nothing is trimmed: reading raises
  :class:`ChangeLogDamagedError`, and ``rankstack repair`` (:func:`repair_log`) keeps every record that
  can be proven good and reports what is lost.
"""

from __future__ import annotations

import errno
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rankstack.errors import ChangeLogDamagedError, DiskFullError
from rankstack.index.manifest import fsync_path

LOG_NAME = "changes.log"
HEAD_NAME = "changes.head"
_OPS = frozenset({"put", "delete"})
_HEAD_SIZE = 64


@dataclass(frozen=True)
class Head:
    """The last acknowledged record: its sequence number and the log's size after it."""

    seq: int
    end: int


def head_path(log: Path) -> Path:
    return log.with_name(HEAD_NAME)


def read_head(log: Path) -> Head | None:
    """The head written after the last append, or None (no head yet, or an unreadable one)."""
    try:
        raw = head_path(log).read_bytes()[:_HEAD_SIZE].rstrip(b" \n")
    except FileNotFoundError:
        return None
    checksum, _, payload = raw.partition(b" ")
    try:
        if int(checksum, 16) != zlib.crc32(payload):
            return None
        seq, end = (int(part) for part in payload.split())
    except ValueError:
        return None
    return Head(seq, end)


def write_head(log: Path, head: Head) -> None:
    """Overwrite the head in place. Not fsync'd: it is written after the log's fsync, so a crash can only
    leave it behind the log (harmless), never ahead of it."""
    payload = b"%d %d" % (head.seq, head.end)
    record = (b"%08x " % zlib.crc32(payload) + payload).ljust(_HEAD_SIZE - 1) + b"\n"
    fd = os.open(head_path(log), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, record, 0)
    finally:
        os.close(fd)


def _encode(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record of one complete line, or None when the line is damaged."""
    if len(line) < 11 or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("op") not in _OPS:
        return None
    return record


@dataclass
class LogScan:
    """What a pass over the log found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0  # byte offset just after the last intact record
    last_seq: int = 0
    torn_tail_bytes: int = 0  # an incomplete last line after ``end``
    damage: list[str] = field(default_factory=list)  # one description per damaged place
    salvaged: list[dict[str, Any]] = field(default_factory=list)  # intact records after the first damage
    lost: int = 0  # acknowledged records known to be missing (from sequence gaps and the head)


def scan_log(path: Path, start: int = 0, last_seq: int = 0, handle: BinaryIO | None = None,
             head: Head | None = None) -> LogScan:
    """Read records from byte ``start`` on, checking checksums, the sequence (``last_seq`` before) and,
    given the ``head`` read before the log, that every acknowledged record is there."""
    scan = LogScan(end=start, last_seq=last_seq)
    _scan_lines(path, start, handle, scan)
    seen = scan.salvaged[-1]["seq"] if scan.salvaged and "seq" in scan.salvaged[-1] else scan.last_seq
    if head is not None and head.seq > seen:
        scan.lost += head.seq - seen
        scan.damage.append(f"the end: the log holds records up to {seen}, but {head.seq} were acknowledged "
                           f"(it was cut short: {head.seq - seen} record(s) missing)")
    return scan


def _scan_lines(path: Path, start: int, handle: BinaryIO | None, scan: LogScan) -> None:
    own = handle is None
    if handle is None:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return
    try:
        handle.seek(start)
        offset, number = start, 0
        for line in handle:
            number += 1
            if not line.endswith(b"\n"):
                scan.torn_tail_bytes = len(line)  # the last line, incomplete: a torn write
                break
            record = _decode(line)
            expected = (scan.salvaged[-1].get("seq", 0) if scan.salvaged else scan.last_seq) + 1
            if record is not None and "seq" in record and record["seq"] != expected:
                if record["seq"] > expected:
                    scan.lost += record["seq"] - expected
                if not scan.damage:
                    problem = f"sequence number {record['seq']} where {expected} was due (records missing)"
                    scan.damage.append(f"byte {offset} (line {number} from byte {start}): {problem}")
                scan.salvaged.append(record)
            elif record is None:
                scan.damage.append(f"byte {offset} (line {number} from byte {start}): checksum or format fails")
            elif scan.damage:
                scan.salvaged.append(record)
            else:
                scan.records.append(record)
                scan.last_seq = int(record.get("seq", scan.last_seq + 1))
                scan.end = offset + len(line)
            offset += len(line)
    finally:
        if own:
            handle.close()


def damage_error(path: Path, scan: LogScan) -> ChangeLogDamagedError:
    index_dir = path.parent.parent
    return ChangeLogDamagedError(
        f"{path} is damaged at {scan.damage[0]}; {len(scan.damage)} damaged place(s), "
        f"{len(scan.records)} intact record(s) before the first and {len(scan.salvaged)} after it"
        f"{f', at least {scan.lost} acknowledged record(s) lost' if scan.lost else ''}. "
        f"Acknowledged changes may be lost, so the index will not open until it is repaired: "
        f"rankstack repair {index_dir} (keeps every intact record, saves the damaged log beside it, "
        f"and reports what is lost)")


def read_log(path: Path, start: int = 0, last_seq: int = 0, handle: BinaryIO | None = None,
             head: Head | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """Intact records from byte ``start`` on, the offset where they end, and the last sequence number.

    Raises :class:`ChangeLogDamagedError` when a damaged line comes before the end, or when records the
    ``head`` (read before the log) says were acknowledged are missing.
    """
    scan = scan_log(path, start, last_seq, handle, head)
    if scan.damage:
        raise damage_error(path, scan)
    return scan.records, scan.end, scan.last_seq


@dataclass
class RepairReport:
    kept: int
    lost_lines: list[str]  # where the damage was
    salvaged_after_damage: int
    torn_tail_bytes: int
    backup: Path | None
    lost_records: int = 0  # acknowledged records known to be lost (sequence gaps, a cut-short log)


def repair_log(path: Path) -> RepairReport:
    """Rewrite the log with every intact record (renumbered), keeping the damaged file as a backup.

    The caller holds the index's writer lock.
    """
    scan = scan_log(path, head=read_head(path))
    if not scan.damage and not scan.torn_tail_bytes:
        return RepairReport(len(scan.records), [], 0, 0, None)
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.link(path, backup)  # the damaged bytes stay on disk for inspection; nothing is destroyed
    kept = scan.records + scan.salvaged
    temporary = path.with_name(f"{path.name}.repair-{os.getpid()}")
    with open(temporary, "wb") as handle:
        for seq, record in enumerate(kept, start=1):
            handle.write(_encode({**record, "seq": seq}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)  # a new file (new inode): running readers see the change
    write_head(path, Head(len(kept), path.stat().st_size))
    fsync_path(path.parent)
    return RepairReport(len(kept), scan.damage, len(scan.salvaged), scan.torn_tail_bytes, backup, scan.lost)


class ChangeLogWriter:
    """Appends records durably. Only the single writer (see rankstack.index.live) holds one."""

    def __init__(self, path: Path) -> None:
        _, valid, self._last_seq = read_log(path, head=read_head(path))  # refuses a damaged log
        self.path = path
        created = not path.exists()
        self._handle = open(path, "ab")
        if created:
            fsync_path(path.parent)
        if self._handle.tell() != valid:  # drop a torn tail left by a crash (never acknowledged)
            self._handle.truncate(valid)
            self._handle.seek(valid)
            os.fsync(self._handle.fileno())
        write_head(path, Head(self._last_seq, valid))

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` and fsync; on failure the log is left exactly as it was."""
        numbered = [{"seq": self._last_seq + i, **r} for i, r in enumerate(records, start=1)]
        before = self._handle.tell()
        try:
            self._handle.write(b"".join(_encode(r) for r in numbered))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            self._rewind(before)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"no space left on the device of {self.path} while logging {len(records)} change(s); "
                    f"none of them was applied (the log is as before). Free some space and retry") from None
            raise
        self._last_seq += len(records)
        write_head(self.path, Head(self._last_seq, self._handle.tell()))

    def _rewind(self, offset: int) -> None:
        # A partial write must not stay: the next record after it would make the log look damaged.
        try:
            self._handle.close()
        except OSError:
            pass  # the failed flush may fail again on close; the truncate below repairs the file
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())
        self._handle = open(self.path, "ab")

    def close(self) -> None:
        self._handle.close()
