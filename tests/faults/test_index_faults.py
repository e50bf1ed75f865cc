"""Fault injection for index directories: damaged files, killed writers and compactions, a full disk.

Each case injects one fault and checks that rankstack ends in an allowed state:

- damage to a file: a RankstackError of the IndexLoadError family that names the file, or results identical to
  the undamaged index's (allowed only where the damage changes nothing, such as a byte inside a torn tail);
  for the change log, ``repair`` must then keep every intact record and report exactly what it lost;
- a killed writer or compaction: every acknowledged change is there and the next writer opens (and clears up);
- a full disk: DiskFullError, and every acknowledged change is there once space is freed.

Anything else is counted by kind (see _tally.py; conftest.py prints the totals) and fails its test.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rankstack.errors import DiskFullError, IndexLoadError, RankstackError, WriterLockedError
from rankstack.index import Index, build_index
from rankstack.index.changelog import LOG_NAME
from rankstack.index.live import IndexWriter, repair
from rankstack.index.manifest import MANIFEST_NAME, seal_manifest
from rankstack.index.sparse import SPARSE_FILES
from rankstack.stages import BM25
from rankstack.types import Doc, Query
from tests.faults._tally import CaseResult, FaultTally

SEED = 1729
# Stop words and inflected forms on purpose: damage to the analyzer settings must be able to change results.
WORDS = ("cat cats dog dogs bird birds fish running runs water bowl loyal bark bright feathers small pets garden "
         "the a of and is to in with").split()
QUERIES = [Query("q1", "cats running in the garden"), Query("q2", "the loyal dogs bark"),
           Query("q3", "bright feathers of a bird"), Query("q4", "small fish water bowl")]
LOG = f"live/{LOG_NAME}"
CHECKSUMMED = ("docs.sqlite", *(f"sparse/{name}" for name in SPARSE_FILES))  # what a BM25 index's manifest lists
TORN = "+torn"  # target suffix: the change log that also ends in a torn (never acknowledged) write
CLI = Path(sys.executable).parent / "rankstack"


# --- documents and what a reader sees -------------------------------------------------------------------------


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def base_docs(count: int, seed: int) -> list[Doc]:
    rng = random.Random(seed)
    return [Doc(f"b{i:03d}", _text(rng, 25), f"title {i}") for i in range(count)]


@dataclass(frozen=True)
class Snapshot:
    """What a reader gets from an index: every live document and the BM25 top 10 of each query."""

    docs: tuple[tuple[str, str | None, str | None], ...]  # (id, title, text), sorted by id
    hits: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]

    @property
    def ids(self) -> set[str]:
        return {doc[0] for doc in self.docs}


def snapshot(path: Path) -> Snapshot:
    index = Index.open(path)
    try:
        view = index.view()
        ids = sorted(view.doc_positions)
        found = view.get_docs(ids)
        # A live id without a stored document is recorded as (id, None, None): a difference, not a test crash.
        docs = tuple((i, found[i].title, found[i].text) if i in found else (i, None, None) for i in ids)
        run = (BM25(index) % 10).transform(QUERIES)
        hits = tuple((q.query_id, tuple((h.doc_id, round(float(h.score), 4)) for h in run.results.get(q.query_id, ())))
                     for q in QUERIES)
        return Snapshot(docs, hits)
    finally:
        index.close()


def read(path: Path) -> Snapshot | Exception:
    """The snapshot, or the exception that opening, viewing or searching raised."""
    try:
        return snapshot(path)
    except Exception as error:  # noqa: BLE001 - classified by the caller
        return error


def difference(expected: Snapshot, got: Snapshot) -> str:
    missing, extra = sorted(expected.ids - got.ids), sorted(got.ids - expected.ids)
    by_id = {doc[0]: doc for doc in got.docs}
    changed = [doc[0] for doc in expected.docs if doc[0] in by_id and by_id[doc[0]] != doc]
    queries = [q for (q, hits), (_, other) in zip(expected.hits, got.hits, strict=True) if hits != other]
    return (f"{len(missing)} documents missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
            f"{len(changed)} with other contents {changed[:5]}, different hits for queries {queries}")


def describe_error(error: BaseException) -> str:
    """Type, where it was raised (innermost rankstack frame and innermost frame) and the message."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if "rankstack" in f.filename and "tests" not in f.filename]
    places = dict.fromkeys(f"{Path(f.filename).name}:{f.lineno} ({f.name})" for f in [*own[-1:], *frames[-1:]])
    where = "".join(f" at {place}" for place in places)
    return f"{type(error).__module__}.{type(error).__qualname__}{where}: {str(error)[:300]}"


def judge_read(case: CaseResult, outcome: Snapshot | Exception, expected: Snapshot, damaged_file: str) -> None:
    """Allowed: identical results, or an IndexLoadError that names the damaged file."""
    if isinstance(outcome, Snapshot):
        if outcome != expected:
            case.wrong(difference(expected, outcome))
    elif isinstance(outcome, IndexLoadError):
        # Damage to the manifest may surface as a file it lists that does not match; saying so is clear enough.
        names = ("manifest",) if damaged_file == MANIFEST_NAME else (Path(damaged_file).name,)
        if not any(name in str(outcome) for name in names):
            case.unclear(f"the error does not name {damaged_file}: {describe_error(outcome)}")
    else:  # a traceback, or a RankstackError outside the "index missing or damaged" family (wrong exit code)
        case.unclear(describe_error(outcome))


def check_state(case: CaseResult, path: Path, expected_ids: set[str], when: str) -> Snapshot | None:
    """The index opens and holds exactly ``expected_ids`` (the acknowledged state)."""
    outcome = read(path)
    if isinstance(outcome, RankstackError):
        case.other(f"{when}: the index does not open: {describe_error(outcome)}")
    elif isinstance(outcome, Exception):
        case.unclear(f"{when}: {describe_error(outcome)}")
    else:
        missing, extra = expected_ids - outcome.ids, outcome.ids - expected_ids
        if missing:
            case.lost(len(missing), f"{when}: {sorted(missing)[:8]} missing")
        if extra:
            case.wrong(f"{when}: documents that are not in the acknowledged state: {sorted(extra)[:8]}")
        return outcome
    return None


# --- 1. damaged files ----------------------------------------------------------------------------------------

FIXED_DAMAGES = ("truncate-0", "truncate-half", "flip-start", "flip-middle", "flip-end", "zero-4k-middle")
# Seeded single-bit flips where no checksum guards the bytes (for checksummed files a few prove the point).
RANDOM_FLIPS = {**dict.fromkeys(CHECKSUMMED, 2), MANIFEST_NAME: 96, LOG: 24, LOG + TORN: 8}
# The manifest guards the other files but nothing guards it: one bit flipped in the first byte of a value
# that changes how the index is read (documents in the segment, stemming, format versions).
MANIFEST_FIELDS = {"docs-count": b'"docs": ', "stem": b'"stem": "', "analyzer-version": b'"version": ',
                   "format-version": b'"format_version": '}


def random_bit_flips(target: str, count: int) -> list[str]:
    rng = random.Random(f"{SEED}/{target}")  # per target, so adding a target does not move the others' flips
    return [f"bit-{rng.random():.6f}-{rng.randrange(8)}" for _ in range(count)]


def damage_cases() -> list[tuple[str, str]]:
    fields = {MANIFEST_NAME: [f"field-{name}" for name in MANIFEST_FIELDS]}
    return [(target, kind) for target, count in RANDOM_FLIPS.items()
            for kind in (*FIXED_DAMAGES, *random_bit_flips(target, count), *fields.get(target, []))]


def damaged(data: bytes, kind: str) -> bytes:
    """``data`` after one damage: a "flip" inverts every bit of a byte, a "bit" flip one bit at a fraction."""
    if kind == "truncate-0":
        return b""
    if kind == "truncate-half":
        return data[:len(data) // 2]
    out = bytearray(data)
    if kind.startswith("flip-"):
        out[{"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[kind.removeprefix("flip-")]] ^= 0xFF
    elif kind == "zero-4k-middle":  # the whole file when it is smaller than 4 KiB
        size = min(4096, len(data))
        start = (len(data) - size) // 2
        out[start:start + size] = bytes(size)
    elif kind.startswith("bit-"):
        _, fraction, bit = kind.split("-")
        out[int(float(fraction) * len(data))] ^= 1 << int(bit)
    elif kind.startswith("field-"):
        marker = MANIFEST_FIELDS[kind.removeprefix("field-")]
        out[data.index(marker) + len(marker)] ^= 1
    else:
        raise ValueError(f"unknown damage {kind}")
    return bytes(out)


def describe_damage(before: bytes, after: bytes) -> str:
    """Where the bytes changed, with the undamaged context (the damage is reproducible from this alone)."""
    if len(after) < len(before):
        return f"truncated from {len(before)} to {len(after)} bytes"
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    first, last = changed[0], changed[-1]
    if first == last:
        context = before[max(0, first - 24):first + 24]
        return f"byte {first} of {len(before)}: {before[first]:#04x} -> {after[first]:#04x}, around {context!r}"
    return f"bytes {first}..{last} of {len(before)} changed"


def complete_lines(data: bytes) -> list[bytes]:
    return [line for line in data.splitlines(keepends=True) if line.endswith(b"\n")]


def record_of(line: bytes) -> dict[str, Any]:
    """The change a log line holds, without its sequence number (repair renumbers)."""
    record = json.loads(line[9:-1])
    record.pop("seq", None)
    return record


def replay(ids: Iterable[str], records: Iterable[dict[str, Any]]) -> set[str]:
    live = set(ids)
    for record in records:
        if record["op"] == "put":
            live.add(record["doc"]["doc_id"])
        else:
            live.discard(record["doc_id"])
    return live


@dataclass(frozen=True)
class Pristine:
    path: Path  # an index with 50 documents and 31 logged changes
    torn: Path  # the same, its log ending in an incomplete record as a crash mid-write leaves it
    truth: Snapshot = field(repr=False)
    base_ids: frozenset[str] = field(repr=False)
    log_lines: tuple[bytes, ...] = field(repr=False)  # the undamaged log's records, as bytes

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record_of(line) for line in self.log_lines]


def _pin_manifest(path: Path) -> None:
    """Fixed manifest bytes (build date and duration vary), so seeded flips hit the same bytes on every run."""
    file = path / MANIFEST_NAME
    manifest = json.loads(file.read_text(encoding="utf-8"))
    manifest.update(created_at="2000-01-01T00:00:00+00:00", build_seconds=0.01)
    file.write_text(json.dumps(seal_manifest(manifest), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _log_changes(path: Path, rng: random.Random) -> None:
    """24 additions, 4 deletions and 3 updates, each visible in the final state, so losing any one shows."""
    with IndexWriter(Index.open(path)) as writer:
        for i in range(24):
            writer.add([Doc(f"n{i:02d}", _text(rng, 48), f"added {i}")])
            if i % 6 == 5:
                writer.delete([f"b{i:03d}"])
            if i % 8 == 7:
                writer.add([Doc(f"b{30 + i // 8:03d}", _text(rng, 40), "updated")])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("pristine")
    docs = base_docs(50, SEED)
    path = build_index(docs, root / "idx")
    _pin_manifest(path)
    _log_changes(path, random.Random(SEED))
    torn = shutil.copytree(path, root / "torn")
    payload = json.dumps({"seq": 32, "op": "put", "doc": {"doc_id": "never", "title": "", "text": "not acked"}},
                         separators=(",", ":")).encode()
    with open(torn / LOG, "ab") as handle:  # cut mid-record: what a crash during an append leaves
        handle.write((b"%08x " % zlib.crc32(payload) + payload)[:40])
    log_lines = tuple(complete_lines((path / LOG).read_bytes()))
    return Pristine(path, torn, snapshot(path), frozenset(d.doc_id for d in docs), log_lines)


def test_the_suite_damages_every_file_of_the_index(pristine: Pristine) -> None:
    """A file added to the index format must be added to the damage targets, not skipped unnoticed."""
    listed = json.loads((pristine.path / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    assert set(listed) == set(CHECKSUMMED)
    # Records on both sides of the zeroed 4 KiB in the middle, so repair has something to salvage after it.
    assert len(pristine.log_lines) == 31 and (pristine.path / LOG).stat().st_size > 2 * 4096
    assert snapshot(pristine.torn) == pristine.truth  # a torn tail alone is ignored


def check_repair(case: CaseResult, path: Path, damaged_log: bytes, pristine: Pristine) -> None:
    """``repair`` keeps every intact record, reports as lost exactly the records it lost, and the index opens."""
    known = set(pristine.log_lines)
    intact = [record_of(line) for line in complete_lines(damaged_log) if line in known]
    try:
        report = repair(path)
    except Exception as error:  # noqa: BLE001 - any exception is a finding
        case.unclear(f"repair: {describe_error(error)}")
        return
    kept = [record_of(line) for line in complete_lines((path / LOG).read_bytes())]
    missing = [record for record in intact if record not in kept]
    if missing:
        case.lost(len(missing), f"repair dropped intact records {missing[:2]}")
    if any(record not in pristine.records for record in kept):
        case.wrong("repair kept a record that was never written")
    lost = len(pristine.log_lines) - len(intact)
    if lost != report.lost_records:
        case.misreported(f"{lost} of {len(pristine.log_lines)} records lost, but the report counts "
                         f"{report.lost_records} (damage at {report.lost_lines[:2]}, kept={report.kept}, "
                         f"torn_tail_bytes={report.torn_tail_bytes})")
    if report.backup is not None and report.backup.read_bytes() != damaged_log:
        case.other("the repair backup does not hold the damaged log")
    if lost and report.backup is None:
        case.other("records were lost but repair saved no backup of the damaged log")
    check_state(case, path, replay(pristine.base_ids, intact), "after repair")


@pytest.mark.parametrize(("target", "kind"), damage_cases(), ids=lambda value: value)
def test_damaged_file(target: str, kind: str, pristine: Pristine, tmp_path: Path, fault_tally: FaultTally) -> None:
    source = pristine.torn if target.endswith(TORN) else pristine.path
    name = target.removesuffix(TORN)
    path = shutil.copytree(source, tmp_path / "idx")
    before = (path / name).read_bytes()
    data = damaged(before, kind)
    (path / name).write_bytes(data)
    case = CaseResult(f"{kind} of {target}: {describe_damage(before, data)}")
    judge_read(case, read(path), pristine.truth, name)
    if name == LOG:
        check_repair(case, path, data, pristine)
    fault_tally.record(case)
    assert case.ok, case.report()


def test_cli_exit_codes_for_a_damaged_log_and_a_held_lock(pristine: Pristine, tmp_path: Path,
                                                          fault_tally: FaultTally) -> None:
    """The CLI says "damaged" (4) and "locked" (8) without a traceback."""
    path = shutil.copytree(pristine.path, tmp_path / "idx")
    (path / LOG).write_bytes(damaged((path / LOG).read_bytes(), "flip-middle"))
    cases = [_cli_case("search on a damaged change log", ["search", str(path), "loyal dogs"], 4)]
    repair(path)
    with IndexWriter(Index.open(path)):  # holds the writer lock while the CLI tries to write
        cases.append(_cli_case("delete while another writer holds the lock", ["delete", str(path), "b001"], 8))
    for case in cases:
        fault_tally.record(case)
    assert all(case.ok for case in cases), "\n".join(case.report() for case in cases if not case.ok)


def _cli_case(name: str, arguments: list[str], expected_code: int) -> CaseResult:
    case = CaseResult(f"CLI: {name}")
    result = subprocess.run([str(CLI), *arguments], capture_output=True, text=True, timeout=120)
    if "Traceback" in result.stderr:
        case.unclear(f"rankstack {' '.join(arguments)} printed a traceback: {result.stderr[-800:]}")
    elif result.returncode != expected_code:
        case.other(f"exit code {result.returncode}, expected {expected_code}: {result.stderr[-400:]}")
    return case


# --- subprocesses that get killed ----------------------------------------------------------------------------


class Child:
    """A Python subprocess whose stdout lines a thread collects, so that waiting for one can time out."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = 60.0) -> bool:
        """Collect lines until one is ``wanted``; False on end of output or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                self._queue.put(None)  # stays at the end for later calls
                return False
            self.lines.append(line)
            if wanted(line):
                return True

    def kill(self) -> str:
        """SIGKILL (whatever it is doing), collect the rest of its output; returns its stderr."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=10)
        while not self._queue.empty():  # what it printed before it died (None marks the end)
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        assert self.process.stderr is not None and self.process.stdout is not None
        errors = self.process.stderr.read()
        self.process.stderr.close()
        self.process.stdout.close()
        return errors


# --- 2. killed writers ---------------------------------------------------------------------------------------

WRITER = """
import sys
from rankstack.index import Index
from rankstack.index.live import IndexWriter
from rankstack.types import Doc

writer = IndexWriter(Index.open(sys.argv[1]))
print("ready", flush=True)
for i in range(int(sys.argv[2]), 10**9):
    print(f"try put w{i}", flush=True)
    writer.add([Doc(f"w{i}", f"written before a crash, number {i} " * 3)])
    print(f"ack put w{i}", flush=True)
    if i % 3 == 2:  # deletions too: a lost deletion brings a document back
        print(f"try delete w{i - 1}", flush=True)
        writer.delete([f"w{i - 1}"])
        print(f"ack delete w{i - 1}", flush=True)
"""


def _apply(ids: set[str], op: str, doc_id: str) -> set[str]:
    return ids | {doc_id} if op == "put" else ids - {doc_id}


def acknowledged(start: set[str], lines: list[str]) -> tuple[set[str], tuple[str, str] | None, set[str]]:
    """The documents after every acknowledged change, the change in flight at the kill, and the acked deletions."""
    ids, in_flight, deleted = set(start), None, set()
    for line in lines:
        word, *change = line.split() if len(line.split()) == 3 else ("", "", "")  # "ready", or cut by the kill
        if word == "try":
            in_flight = (change[0], change[1])
        elif word == "ack":
            ids = _apply(ids, change[0], change[1])
            deleted |= {change[1]} if change[0] == "delete" else set()
            in_flight = None
    return ids, in_flight, deleted


def judge_writer_round(case: CaseResult, present: set[str], expected: set[str], in_flight: tuple[str, str] | None,
                       deleted: set[str]) -> None:
    """The change in flight may or may not have landed; every acknowledged one must have."""
    allowed = [expected] + ([_apply(expected, *in_flight)] if in_flight else [])
    if present in allowed:
        return
    flight_id = {in_flight[1]} if in_flight else set()
    gone, back = expected - present - flight_id, present - expected - flight_id
    if gone | (back & deleted):
        case.lost(len(gone | (back & deleted)), f"missing {sorted(gone)[:8]}, deleted but back "
                                                f"{sorted(back & deleted)[:8]}")
    if back - deleted:
        case.wrong(f"documents never written: {sorted(back - deleted)[:8]}")


def test_killed_writers_keep_every_acknowledged_change(tmp_path: Path, fault_tally: FaultTally) -> None:
    path = build_index(base_docs(20, SEED), tmp_path / "idx")
    rng = random.Random(SEED + 2)
    present, next_number, cases = {d.doc_id for d in base_docs(20, SEED)}, 0, []
    for number in range(5):
        acks = rng.randint(0, 30)
        case = CaseResult(f"writer killed after {acks} acknowledgements (round {number})")
        child = Child(WRITER, str(path), str(next_number))
        if not child.wait_for(lambda line: line == "ready"):
            case.other(f"the writer did not start: {child.kill()[-800:]}")
        else:
            if number == 0:
                _check_lock_is_held(case, path)
            died = acks > 0 and not child.wait_for(_after_acks(acks))
            time.sleep(rng.uniform(0, 0.01))  # land the kill anywhere, also inside an append
            errors = child.kill()
            if died:
                case.other(f"the writer died on its own: {errors[-800:]}")
            if not (path / LOG).read_bytes().endswith(b"\n"):
                case.name += " (the kill left a torn tail)"
            expected, in_flight, deleted = acknowledged(present, child.lines)
            outcome = read(path)
            if isinstance(outcome, Exception):
                case.unclear(f"reopening after the kill: {describe_error(outcome)}")
            else:
                judge_writer_round(case, outcome.ids, expected, in_flight, deleted)
                present = outcome.ids  # the change in flight, if it landed, is durable from now on
            _check_next_writer_opens(case, path)
            tried = [int(line.split()[2][1:]) for line in child.lines if line.startswith("try put")]
            next_number = max(tried, default=next_number - 1) + 1
        fault_tally.record(case)
        cases.append(case)
    assert all(case.ok for case in cases), "\n".join(case.report() for case in cases if not case.ok)


def _after_acks(count: int) -> Callable[[str], bool]:
    """A line predicate that is true at the ``count``-th acknowledgement."""
    seen = 0

    def enough(line: str) -> bool:
        nonlocal seen
        seen += line.startswith("ack")
        return seen >= count

    return enough


def _check_lock_is_held(case: CaseResult, path: Path) -> None:
    try:
        IndexWriter(Index.open(path)).close()
        case.other("a second writer opened while the first held the index")
    except WriterLockedError:
        pass


def _check_next_writer_opens(case: CaseResult, path: Path) -> None:
    try:
        IndexWriter(Index.open(path)).close()
    except Exception as error:  # noqa: BLE001 - any exception is a finding
        case.other(f"the next writer does not open: {describe_error(error)}")


# --- 3. killed compactions -----------------------------------------------------------------------------------

COMPACTOR = """
import sys, time
from rankstack.index import Index
from rankstack.index.live import IndexWriter

writer = IndexWriter(Index.open(sys.argv[1]))
print("ready", flush=True)
started = time.perf_counter()
writer.compact()
print(f"done {time.perf_counter() - started:.6f}", flush=True)
writer.close()
"""


@pytest.fixture(scope="module")
def compaction_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Snapshot]:
    """400 documents and 300 logged changes (240 additions, 30 deletions, 30 updates), and what readers see."""
    path = build_index(base_docs(400, SEED), tmp_path_factory.mktemp("compaction") / "idx")
    rng = random.Random(SEED + 1)
    with IndexWriter(Index.open(path)) as writer:
        for batch in range(30):
            writer.add([Doc(f"c{batch:02d}-{i}", _text(rng, 30)) for i in range(8)])
            writer.delete([f"b{batch:03d}"])
            writer.add([Doc(f"b{100 + batch:03d}", _text(rng, 30), "updated")])
    return path, snapshot(path)


def test_killed_compactions_leave_the_acknowledged_state(compaction_template: tuple[Path, Snapshot], tmp_path: Path,
                                                          fault_tally: FaultTally) -> None:
    template, truth = compaction_template
    rng = random.Random(SEED + 3)
    rounds, duration, cases = 8, 0.0, []
    for number in range(rounds):  # round 0 runs to the end: it times a compaction for the kills that follow
        root = tmp_path / f"round-{number}"
        path = shutil.copytree(template, root / "idx")
        child = Child(COMPACTOR, str(path))
        case = CaseResult(f"compaction round {number}")
        if not child.wait_for(lambda line: line == "ready"):
            case.other(f"the compaction did not start: {child.kill()[-800:]}")
        elif number == 0:
            if child.wait_for(lambda line: line.startswith("done")):
                duration = float(child.lines[-1].split()[1])
            child.kill()
            case.name = f"compaction run to the end ({duration * 1000:.0f} ms)"
        else:
            # Stratified: one kill in each slice of the compaction's duration (and a little after it).
            delay = (number - 1 + rng.random()) / (rounds - 1) * duration * 1.5
            time.sleep(delay)
            child.kill()
            finished = any(line.startswith("done") for line in child.lines)
            case.name = f"compaction killed after {delay * 1000:.1f} of ~{duration * 1000:.0f} ms" + (
                " (it had finished)" if finished else "")
        _judge_compaction(case, path, truth)
        fault_tally.record(case)
        cases.append(case)
    assert all(case.ok for case in cases), "\n".join(case.report() for case in cases if not case.ok)


def _judge_compaction(case: CaseResult, path: Path, truth: Snapshot) -> None:
    """Readers see exactly the state before the compaction; the next writer clears what the kill left."""
    outcome = check_state(case, path, truth.ids, "after the kill")
    if outcome is not None and outcome.ids == truth.ids and outcome != truth:
        case.wrong(f"after the kill: {difference(truth, outcome)}")
    left = sorted(p.name for p in path.parent.iterdir() if p != path)
    _check_next_writer_opens(case, path)
    remaining = sorted(p.name for p in path.parent.iterdir() if p != path)
    if remaining:
        case.other(f"the next writer left {remaining} beside the index (the kill left {left})")
    check_state(case, path, truth.ids, "after the next writer")


# --- 4. a small disk -----------------------------------------------------------------------------------------


@contextmanager
def small_disk(where: Path, size: str = "3m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)  # a file still open: detach


def fill_to(disk: Path, leave: int) -> None:
    """Add a filler file so that at most ``leave`` bytes stay free."""
    stats = os.statvfs(disk)
    size = stats.f_bavail * stats.f_frsize - leave
    if size > 0:
        (disk / f"filler-{len(list(disk.glob('filler-*')))}").write_bytes(bytes(size))


def _expect_disk_full(case: CaseResult, action: Callable[[], object], allow_other_rankstack: bool = False) -> None:
    try:
        action()
        case.other("succeeded although the disk was full (the test did not fill it)")
    except DiskFullError:
        pass
    except RankstackError as error:
        if not allow_other_rankstack:
            case.unclear(f"not a DiskFullError: {describe_error(error)}")
    except Exception as error:  # noqa: BLE001 - any other exception is a finding
        case.unclear(describe_error(error))


def _no_leftovers(case: CaseResult, disk: Path) -> None:
    stray = sorted(p.name for p in disk.iterdir() if p.name != "idx" and not p.name.startswith("filler-"))
    if stray:
        case.other(f"left beside the index: {stray}")


def test_a_full_disk_raises_disk_full_and_keeps_acknowledged_writes(tmp_path: Path, fault_tally: FaultTally) -> None:
    cases: list[CaseResult] = []
    with small_disk(tmp_path / "disk") as disk:
        path = build_index(base_docs(50, SEED), disk / "idx")
        acked = {f"b{i:03d}" for i in range(50)}
        rng = random.Random(SEED + 4)
        fill_to(disk, leave=256 * 1024)
        writer = IndexWriter(Index.open(path))
        try:
            cases.append(_add_until_full(writer, path, acked, rng))
            fill_to(disk, leave=0)
            case = CaseResult("full disk: IndexWriter.compact()")
            _expect_disk_full(case, writer.compact)
            check_state(case, path, acked, "after the failed compaction")
            _no_leftovers(case, disk)
            cases.append(case)
        finally:
            writer.close()
        case = CaseResult("full disk: build_index(..., overwrite=True) over the index")
        _expect_disk_full(case, lambda: build_index(base_docs(200, SEED + 5), path, overwrite=True),
                          allow_other_rankstack=True)
        check_state(case, path, acked, "after the failed build")
        _no_leftovers(case, disk)
        cases.append(case)
        cases.append(_cli_case("compact on a full disk", ["compact", str(path)], 7))
        cases.append(_recover(disk, path, acked))
    for case in cases:
        fault_tally.record(case)
    assert all(case.ok for case in cases), "\n".join(case.report() for case in cases if not case.ok)


def _add_until_full(writer: IndexWriter, path: Path, acked: set[str], rng: random.Random) -> CaseResult:
    """Large documents (~35 KB each) until the log append fails; the log must stay as before the failure."""
    case = CaseResult("full disk: IndexWriter.add until the disk is full")
    for i in range(64):
        try:
            writer.add([Doc(f"big{i}", _text(rng, 6000))])
        except DiskFullError:
            case.name += f" ({i} acknowledged, then DiskFullError)"
            break
        except Exception as error:  # noqa: BLE001 - any other exception is a finding
            case.unclear(describe_error(error))
            break
        acked.add(f"big{i}")
    else:
        case.other("64 large documents fit: the disk was not filled")
    check_state(case, path, acked, "after the failed append")
    return case


def _recover(disk: Path, path: Path, acked: set[str]) -> CaseResult:
    """With space again, the same index takes writes and compacts, keeping every acknowledged change."""
    case = CaseResult("full disk: recovery after freeing space")
    for filler in disk.glob("filler-*"):
        filler.unlink()
    try:
        with IndexWriter(Index.open(path)) as writer:
            writer.add([Doc("after-full", "written once space was freed")])
            acked.add("after-full")
            writer.compact()
    except Exception as error:  # noqa: BLE001 - any exception is a finding
        case.other(f"the index does not take writes after space was freed: {describe_error(error)}")
    check_state(case, path, acked, "after freeing space")
    _no_leftovers(case, disk)
    return case
