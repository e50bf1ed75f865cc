"""Change-log faults: damage is refused and repaired without silent loss; no change goes unseen."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rankstack.errors import ChangeLogDamagedError, DiskFullError
from rankstack.index import Index, build_index
from rankstack.index.changelog import LOG_NAME, ChangeLogWriter, scan_log
from rankstack.index.live import IndexWriter, repair
from rankstack.types import Doc


def _index_with_changes(tmp_path: Path) -> Path:
    path = build_index([Doc("base", "the first document")], tmp_path / "idx")
    with IndexWriter(Index.open(path)) as writer:
        for i in range(6):
            writer.add([Doc(f"n{i}", f"added document {i}")])
        writer.delete(["n1"])  # a delete that a lost record would bring back
        writer.add([Doc("n6", "the last one")])
    return path


def _log(path: Path) -> Path:
    return path / "live" / LOG_NAME


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


def test_a_flipped_byte_mid_log_refuses_readers_and_writers(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    _flip(log, log.stat().st_size // 2)
    with pytest.raises(ChangeLogDamagedError, match=r"damaged at byte \d+.*rankstack repair"):
        Index.open(path).view()
    with pytest.raises(ChangeLogDamagedError):
        IndexWriter(Index.open(path))
    size = log.stat().st_size
    with pytest.raises(ChangeLogDamagedError):
        IndexWriter(Index.open(path))
    assert log.stat().st_size == size  # nothing was truncated


def test_a_damaged_last_complete_record_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    _flip(log, log.stat().st_size - 5)  # inside the last record, its newline intact
    with pytest.raises(ChangeLogDamagedError):
        Index.open(path).view()


def test_repair_keeps_every_intact_record_and_reports_the_lost_one(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    lines = log.read_bytes().splitlines(keepends=True)
    damaged_at = sum(len(line) for line in lines[:2])  # the third record: n2
    _flip(log, damaged_at + 20)
    report = repair(path)
    assert report.kept == len(lines) - 1 and report.salvaged_after_damage == len(lines) - 3
    assert len(report.lost_lines) == 1 and f"byte {damaged_at}" in report.lost_lines[0]
    assert report.backup is not None and report.backup.read_bytes() != log.read_bytes()
    view = Index.open(path).view()
    assert set(view.doc_positions) == {"base", "n0", "n3", "n4", "n5", "n6"}  # n1 stays deleted; n2 lost
    with IndexWriter(Index.open(path)) as writer:  # writable again, and the sequence goes on
        writer.add([Doc("n7", "after the repair")])
    assert "n7" in Index.open(path).view().doc_positions
    assert scan_log(log).damage == []


def test_only_an_incomplete_last_line_is_trimmed(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    intact = log.stat().st_size
    with open(log, "ab") as handle:
        handle.write(b"0badf00d {\"op\":\"put\",\"doc\":{\"doc_id\":\"torn")  # a crash mid-write
    assert len(Index.open(path).view().doc_positions) == 7
    with IndexWriter(Index.open(path)) as writer:
        assert log.stat().st_size == intact
        writer.add([Doc("n8", "written after the trim")])
    assert "n8" in Index.open(path).view().doc_positions


def test_a_reader_sees_a_write_of_the_same_length_after_a_torn_tail_was_trimmed(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    reader = Index.open(path)
    assert "n9" not in reader.view().doc_positions
    record_length = len(log.read_bytes().splitlines(keepends=True)[-1])
    with open(log, "ab") as handle:  # a torn tail exactly as long as the next record will be
        handle.write(b"x" * (record_length - 1))
    assert len(reader.view().doc_positions) == 7
    with IndexWriter(Index.open(path)) as writer:
        writer.add([Doc("n9", "the last one")])  # same length as "n6"'s record
    assert log.stat().st_size == len(log.read_bytes())
    assert "n9" in reader.view().doc_positions


def test_a_reader_notices_a_repaired_log(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    reader = Index.open(path)
    assert "n6" in reader.view().doc_positions
    log = _log(path)
    lines = log.read_bytes().splitlines(keepends=True)
    _flip(log, len(log.read_bytes()) - len(lines[-1]) + 20)  # the last record (n6) damaged
    repair(path)
    assert "n6" not in reader.view().doc_positions


def test_a_failed_append_leaves_the_log_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    before = log.read_bytes()
    writer = ChangeLogWriter(log)
    real_fsync = os.fsync
    calls = []

    def full_disk_once(fd: int) -> None:  # the append's fsync fails; truncating frees the space again
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_once)
    with pytest.raises(DiskFullError, match="none of them was applied"):
        writer.append([{"op": "delete", "doc_id": "n0"}])
    assert log.read_bytes() == before
    writer.append([{"op": "delete", "doc_id": "n0"}])
    writer.close()
    assert "n0" not in Index.open(path).view().doc_positions


def test_a_writer_removes_what_killed_compactions_left(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    leftover = path.parent / f".{path.name}.compact-deadbeef"
    (leftover / "sparse").mkdir(parents=True)
    (leftover / "sparse" / "vocab.json").write_text("{}")
    unrelated = path.parent / ".other.compact-deadbeef"
    unrelated.mkdir()
    with IndexWriter(Index.open(path)):
        pass
    assert not leftover.exists() and unrelated.exists()


@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_a_log_cut_short_is_damage_not_a_torn_tail(tmp_path: Path, keep: float) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    reader = Index.open(path)
    assert len(reader.view().doc_positions) == 7
    with open(log, "r+b") as handle:
        handle.truncate(int(log.stat().st_size * keep))
    with pytest.raises(ChangeLogDamagedError, match=r"8 were acknowledged .*missing"):
        Index.open(path).view()
    with pytest.raises(ChangeLogDamagedError):
        reader.view()  # a running reader notices too
    with pytest.raises(ChangeLogDamagedError):
        IndexWriter(Index.open(path))
    report = repair(path)
    assert report.lost_records == 8 - report.kept and report.backup is not None


def test_a_flipped_final_newline_is_damage(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    log = _log(path)
    _flip(log, log.stat().st_size - 1)  # "\n" becomes "*": the last line now looks incomplete
    with pytest.raises(ChangeLogDamagedError, match="acknowledged"):
        Index.open(path).view()


def test_repair_counts_every_record_lost_in_a_zeroed_block(tmp_path: Path) -> None:
    path = build_index([Doc("base", "the first document")], tmp_path / "idx")
    with IndexWriter(Index.open(path)) as writer:
        for i in range(40):
            writer.add([Doc(f"n{i}", f"added document {i}")])
    log = _log(path)
    data = bytearray(log.read_bytes())
    record_length = len(data) / 40
    start = len(data) // 3
    data[start:start + 600] = bytes(600)
    log.write_bytes(bytes(data))
    report = repair(path)
    survivors = set(Index.open(path).view().doc_positions) - {"base"}
    assert report.lost_records == 40 - len(survivors) == 40 - report.kept
    assert report.lost_records >= int(600 / record_length)  # every record the block touched


def test_a_writer_removes_the_build_folder_of_a_killed_compaction(tmp_path: Path) -> None:
    path = _index_with_changes(tmp_path)
    building = path.parent / f"..{path.name}.compact-deadbeef.building-cafe0123"
    building.mkdir()
    with IndexWriter(Index.open(path)):
        pass
    assert not building.exists()
