"""Live indexes: add, update and delete documents without a rebuild, with exact BM25 statistics.

Changes go to an append-only, fsync'd log (``live/changes.log``) and into an in-memory snapshot:
deletion marks over the segment's rows plus the documents added since. Scores are computed at query
time from raw term frequencies with statistics over the whole live corpus (document count, average
length, document frequencies), so they equal those of an index built from scratch on the same
documents. ``compact`` folds everything into a new segment, swapped in atomically.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import DataFormatError, DiskFullError, EmptyInputError, WriterLockedError, is_disk_full
from rankstack.ids import ID_RULE, id_problem
from rankstack.index._index import Index, Segment
from rankstack.index.changelog import (
    LOG_NAME,
    ChangeLogWriter,
    LogScan,
    RepairReport,
    damage_error,
    read_head,
    read_log,
    repair_log,
)
from rankstack.index.dense import DenseVectors
from rankstack.index.lucene_bm25 import idf, posting_scores
from rankstack.types import Doc

logger = logging.getLogger(__name__)
LIVE_DIR = "live"


@dataclass(frozen=True)
class AddedDoc:
    doc: Doc
    term_freqs: dict[str, int]
    length: int
    vectors: dict[str, np.ndarray]  # dense key (model@precision) -> vector


@dataclass
class LiveView:
    """An immutable snapshot: a segment, deletion marks over its rows, and the documents added since.

    Rows 0..n-1 are the segment's, n.. the added documents' (a deleted or replaced added document
    keeps its row, marked dead), so row numbers never move within a snapshot.
    """

    segment: Segment
    dead_segment_rows: np.ndarray
    added: tuple[AddedDoc, ...]
    dead_added: frozenset[int] = frozenset()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- identity of rows ---
    @cached_property
    def doc_id_array(self) -> np.ndarray:
        return np.concatenate([self.segment.doc_id_array,
                               np.array([a.doc.doc_id for a in self.added], dtype=object)])

    @cached_property
    def doc_id_ranks(self) -> np.ndarray:
        ranks = np.empty(len(self.doc_id_array), dtype=np.int64)
        ranks[np.argsort(self.doc_id_array, kind="stable")] = np.arange(len(self.doc_id_array))
        return ranks

    @cached_property
    def alive(self) -> np.ndarray:
        added_alive = np.array([i not in self.dead_added for i in range(len(self.added))], dtype=bool)
        return np.concatenate([~self.dead_segment_rows, added_alive])

    @cached_property
    def doc_positions(self) -> dict[str, int]:
        ids = self.doc_id_array
        return {ids[row]: int(row) for row in np.flatnonzero(self.alive)}

    @property
    def num_docs(self) -> int:
        return len(self.doc_positions)

    # --- documents ---
    def get_docs(self, doc_ids: list[str]) -> dict[str, Doc]:
        positions = self.doc_positions
        base_rows = self.segment.num_docs
        wanted = [d for d in doc_ids if d in positions]
        found = {d: self.added[positions[d] - base_rows].doc for d in wanted if positions[d] >= base_rows}
        found.update(self.segment.get_docs([d for d in wanted if positions[d] < base_rows]))
        return found

    def get_doc(self, doc_id: str) -> Doc | None:
        return self.get_docs([doc_id]).get(doc_id)

    def live_docs(self, chunk: int = 1000) -> Iterator[Doc]:
        """Every live document: the segment's in row order, then the added ones."""
        dead = self.dead_segment_rows
        for start in range(0, self.segment.num_docs, chunk):
            for offset, doc in enumerate(self.segment.docstore.range(start, start + chunk)):
                if not dead[start + offset]:
                    yield doc
        for i, added in enumerate(self.added):
            if i not in self.dead_added:
                yield added.doc

    # --- BM25 with statistics over the live corpus ---
    @cached_property
    def _lengths(self) -> np.ndarray:
        return np.concatenate([self.segment.sparse.doc_lengths.astype(np.int64),
                               np.array([a.length for a in self.added], dtype=np.int64)])

    @cached_property
    def _added_postings(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rows: dict[str, list[int]] = {}
        freqs: dict[str, list[int]] = {}
        base_rows = self.segment.num_docs
        for i, added in enumerate(self.added):
            if i in self.dead_added:
                continue
            for term, tf in added.term_freqs.items():
                rows.setdefault(term, []).append(base_rows + i)
                freqs.setdefault(term, []).append(tf)
        return {t: (np.array(rows[t], dtype=np.int64), np.array(freqs[t], dtype=np.int32)) for t in rows}

    @cached_property
    def _collection_stats(self) -> tuple[int, float]:
        live_lengths = self._lengths[self.alive]
        doc_count = int(np.count_nonzero(live_lengths))
        return doc_count, float(live_lengths.sum()) / max(doc_count, 1)

    def bm25_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray | None:
        sparse = self.segment.sparse
        doc_count, avg_length = self._collection_stats
        scores = np.zeros(len(self.doc_id_array), dtype=np.float32)
        matched = False
        dead = self.dead_segment_rows
        for term in terms:  # repeated terms count again, as in the segment path (and Lucene's boosts)
            term_id = sparse.vocab.get(term)
            if term_id is not None:
                start, end = sparse.term_indptr[term_id], sparse.term_indptr[term_id + 1]
                rows, freqs = sparse.doc_indices[start:end], sparse.term_freqs[start:end]
                keep = ~dead[rows]
                rows, freqs = rows[keep].astype(np.int64), freqs[keep]
            else:
                rows, freqs = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
            added_rows, added_freqs = self._added_postings.get(term, (rows[:0], freqs[:0]))
            rows, freqs = np.concatenate([rows, added_rows]), np.concatenate([freqs, added_freqs])
            if len(rows) == 0:
                continue
            matched = True
            term_idf = np.repeat(idf(np.array([len(rows)]), doc_count), len(rows))
            scores[rows] += posting_scores(term_idf, freqs, self._lengths[rows], avg_length, k1, b)
        return scores if matched else None

    # --- dense: exact search over live rows (an HNSW graph covers only a segment) ---
    def _dense_matrix(self, vectors: DenseVectors) -> np.ndarray:
        key = f"{vectors.meta['model']}@{vectors.meta['precision']}"
        cache_key = f"dense:{key}"
        if cache_key not in self._cache:
            added = [a.vectors[key] for a in self.added] if self.added else []
            matrix = np.vstack([vectors.vectors, *[v[None, :] for v in added]]) if added else vectors.vectors
            self._cache[cache_key] = matrix
        return self._cache[cache_key]

    def dense_search(self, vectors: DenseVectors, queries: np.ndarray, count: int, method: str, ef_search: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        from rankstack.stages._ranking import top_rows

        matrix = self._dense_matrix(vectors)
        alive_rows = np.flatnonzero(self.alive)
        count = min(count, len(alive_rows))
        all_scores = np.full((len(queries), count), -np.inf, dtype=np.float32)
        all_rows = np.full((len(queries), count), -1, dtype=np.int64)
        for i, query in enumerate(np.asarray(queries, dtype=np.float32)):
            scores = matrix[alive_rows] @ query
            best = top_rows(scores, count, self.doc_id_ranks[alive_rows])[:count]
            all_scores[i, :len(best)] = scores[best]
            all_rows[i, :len(best)] = alive_rows[best]
        return all_scores, all_rows

    def dense_rows(self, vectors: DenseVectors, rows: list[int]) -> np.ndarray:
        return self._dense_matrix(vectors)[rows]

    # --- changes ---
    def apply(self, records: Sequence[dict[str, Any]], analyzer: Any) -> LiveView:
        """A new snapshot with ``records`` applied (this one is left unchanged)."""
        dead_segment = self.dead_segment_rows.copy()
        added = list(self.added)
        dead_added = set(self.dead_added)
        positions = dict(self.doc_positions)
        base_rows = self.segment.num_docs
        for record in records:
            doc_id = record["doc"]["doc_id"] if record["op"] == "put" else record["doc_id"]
            row = positions.pop(doc_id, None)
            if row is not None:  # an update or a delete retires the current copy
                if row < base_rows:
                    dead_segment[row] = True
                else:
                    dead_added.add(row - base_rows)
            if record["op"] == "put":
                doc = Doc(doc_id, record["doc"]["text"], record["doc"].get("title", ""))
                terms = analyzer.analyze(doc.contents)
                vectors = {k: np.frombuffer(base64.b64decode(v), dtype=np.float32) for k, v in
                           record.get("vectors", {}).items()}
                added.append(AddedDoc(doc, dict(Counter(terms)), len(terms), vectors))
                positions[doc_id] = base_rows + len(added) - 1
        return LiveView(self.segment, dead_segment, tuple(added), frozenset(dead_added))


def empty_view(segment: Segment) -> LiveView:
    return LiveView(segment, np.zeros(segment.num_docs, dtype=bool), ())


def _log_path(path: Path) -> Path:
    return path / LIVE_DIR / LOG_NAME


def apply_log_tail(index: Index) -> None:
    """Bring ``index`` up to date with its change log (three stat calls when nothing changed).

    Changes are noticed without any chance of collision: the index holds its log (and its manifest)
    open, so a file that replaced either cannot have the same inode; the log itself only grows between
    replacements, and its records carry sequence numbers that must follow on.
    """
    log = _log_path(index.path)
    if not _generation_changed(index) and _log_unchanged(index, log):
        return
    with index._refresh_lock:
        if _generation_changed(index):
            index.reopen()  # a compaction swapped in a new generation of the directory
        _read_log_tail(index, log)
        if _generation_changed(index):  # swapped while we read: read the new generation instead
            index.reopen()
            _read_log_tail(index, log)


def _log_unchanged(index: Index, log: Path) -> bool:
    """Whether the log is the one already read, to its end (checked without the lock: False when unsure)."""
    handle = index._log_handle
    try:
        status = log.stat()
        return handle is not None and os.fstat(handle.fileno()).st_ino == status.st_ino \
            and status.st_size == index._log_offset
    except (OSError, ValueError):  # no log, or the handle was just closed by another thread
        return False


def _generation_changed(index: Index) -> bool:
    try:
        return (index.path / "manifest.json").stat().st_ino != index.segment.manifest_inode
    except FileNotFoundError:
        return False  # mid-swap on a system without atomic exchange; the next look finds the new one


def _read_log_tail(index: Index, log: Path) -> None:
    head = read_head(log)  # before the log: the writer updates it only after the log is on disk
    handle = index._log_handle
    try:
        status: os.stat_result | None = os.stat(log)
    except FileNotFoundError:
        status = None
    replaced = handle is None or status is None or os.fstat(handle.fileno()).st_ino != status.st_ino
    if replaced or (status is not None and status.st_size < index._log_offset):
        # A new log (first look, a repair, none yet) or one cut short in place: read it from the start.
        if handle is not None:
            handle.close()
        index._log_handle = open(log, "rb") if status is not None else None
        index._live, index._log_offset, index._log_seq = None, 0, 0
        if index._log_handle is None:
            if head is not None and head.seq > 0:
                raise damage_error(log, LogScan(damage=[f"the end: the log is missing, but {head.seq} "
                                                        "record(s) were acknowledged"], lost=head.seq))
            return
    new, valid, last_seq = read_log(log, index._log_offset, index._log_seq, index._log_handle, head)
    if new:
        view = index._live if index._live is not None else empty_view(index.segment)
        index._live = view.apply(new, index.analyzer)
    index._log_offset, index._log_seq = valid, last_seq


@dataclass
class DeleteReport:
    deleted: list[str]
    unknown: list[str]


class IndexWriter:
    """The one writer of an index: add, update (same id), delete, compact.

    A second writer, in this process or another, is refused while this one is open. Every method
    returns only after its changes are durable in the log.

    >>> # with IndexWriter(Index.open("idx")) as writer: writer.add([Doc("d9", "new text")])
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        live = index.path / LIVE_DIR
        live.mkdir(exist_ok=True)
        self._lock_file = _lock(live / "writer.lock", index.path)
        try:
            _remove_stale_compactions(index.path)
            self._log = ChangeLogWriter(_log_path(index.path))
            index.refresh()
        except BaseException:
            _unlock(self._lock_file)
            raise

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dense_dimensions(self) -> dict[str, int]:
        return {key: int(entry["dimension"]) for key, entry in self.index.manifest.get("dense", {}).items()}

    def add(self, docs: Iterable[Doc], vectors: dict[str, np.ndarray] | None = None) -> int:
        """Add or replace documents; vectors per dense key are encoded when not given. Returns the count."""
        batch = list(docs)
        for position, doc in enumerate(batch, start=1):
            problem = id_problem(doc.doc_id)
            if problem is not None:
                raise DataFormatError(f"document {position} of the batch: id {doc.doc_id!r} {problem}; nothing was "
                                      f"added", hint=ID_RULE)
        if not batch:
            return 0
        given = dict(vectors or {})
        for key, dimension in self._dense_dimensions().items():
            matrix = given.get(key)
            if matrix is None:
                matrix = self._encode(key, batch)
            matrix = np.asarray(matrix, dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape != (len(batch), dimension):
                raise DataFormatError(f"vectors for '{key}' have shape {tuple(matrix.shape)}, but the index needs "
                                      f"({len(batch)}, {dimension}): one {dimension}-d vector per document; "
                                      f"nothing was added")
            given[key] = matrix
        unknown_keys = set(given) - set(self._dense_dimensions())
        if unknown_keys:
            raise DataFormatError(f"the index has no vectors named {', '.join(sorted(unknown_keys))}; "
                                  f"known: {', '.join(self._dense_dimensions()) or 'none'}")
        records = [{"op": "put", "doc": {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text},
                    "vectors": {k: base64.b64encode(m[i].tobytes()).decode("ascii") for k, m in given.items()}}
                   for i, doc in enumerate(batch)]
        self._write(records)
        return len(batch)

    def _encode(self, key: str, docs: list[Doc]) -> np.ndarray:
        from rankstack.models.encoder import load_encoder

        entry = self.index.manifest["dense"][key]
        encoder = load_encoder(entry["model"], entry["precision"])
        return encoder.encode_docs([d.contents for d in docs])

    def delete(self, doc_ids: Iterable[str]) -> DeleteReport:
        """Delete documents; ids not in the index are reported, not fatal to the rest."""
        positions = self.index.view().doc_positions
        wanted = list(dict.fromkeys(doc_ids))
        report = DeleteReport([d for d in wanted if d in positions], [d for d in wanted if d not in positions])
        if report.deleted:
            self._write([{"op": "delete", "doc_id": d} for d in report.deleted])
        return report

    def _write(self, records: list[dict[str, Any]]) -> None:
        self._log.append(records)  # durable before it becomes visible or is acknowledged
        self.index.refresh()

    def compact(self, progress: Callable[[int], None] | None = None) -> Path:
        """Fold the live changes into a new segment and swap it in atomically."""
        from rankstack.index.builder import build_index
        from rankstack.index.dense import write_dense_vectors

        view = self.index.view()
        if not isinstance(view, LiveView):
            return self.index.path
        if view.num_docs == 0:
            raise EmptyInputError(f"every document of {self.index.path} is deleted; an index cannot be empty, so "
                                  f"the changes stay in the log until documents are added")
        path = self.index.path
        staging = path.parent / f".{path.name}.compact-{uuid.uuid4().hex[:8]}"
        kept = f"the index and its {len(view.added)} added and {int(view.dead_segment_rows.sum())} " \
               "deleted documents in the log are unchanged"
        manifest = self.index.manifest
        try:
            build_index(view.live_docs(), staging, progress=progress,
                        ignore_identical_ids=manifest.get("ignore_identical_ids", False))
            alive = np.flatnonzero(view.alive)
            for key, entry in manifest.get("dense", {}).items():
                stored = self.index.dense_vectors(entry["model"], entry["precision"], exact=True)
                assert stored is not None
                matrix = view._dense_matrix(stored)[alive]
                write_dense_vectors(staging, key, stored.meta, matrix)
            # Lock the new generation before it becomes visible, so no other writer slips in at the swap.
            (staging / LIVE_DIR).mkdir()
            new_lock = _lock(staging / LIVE_DIR / "writer.lock", path)
            self._log.close()
            _exchange(staging, path)
        except Exception as error:
            shutil.rmtree(staging, ignore_errors=True)
            if is_disk_full(error):
                raise DiskFullError(f"no space left on the device of {path} while compacting; {kept}. "
                                    "Free some space (a compaction needs room for a second copy) and retry") from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old_lock, self._lock_file = self._lock_file, new_lock
        old_lock.close()
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old directory
        self.index.reopen()
        self._log = ChangeLogWriter(_log_path(path))
        return path

    def close(self) -> None:
        self._log.close()
        _unlock(self._lock_file)


def _unlock(handle: Any) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def _remove_stale_compactions(path: Path) -> None:
    """Remove what killed compactions left beside the index (its writer lock is held, so none is running).

    A compaction builds ``.NAME.compact-XXXX`` beside the index and, after the swap, that name holds the
    old generation until it is removed; a crash at either point leaves it behind.
    """
    # The staging directory's own build folder is named after it: "..NAME.compact-XXXX.building-YYYY".
    for pattern in (f".{path.name}.compact-*", f"..{path.name}.compact-*"):
        for leftover in path.parent.glob(pattern):
            logger.info("removing %s, left by an interrupted compaction", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in path.parent.glob(f".{path.name}.retired-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def repair(index_path: Path) -> RepairReport:
    """Repair a damaged change log under the writer lock (see rankstack.index.changelog.repair_log)."""
    live = index_path / LIVE_DIR
    if not (live / LOG_NAME).is_file() and read_head(live / LOG_NAME) is None:
        return RepairReport(0, [], 0, 0, None)
    (live / LOG_NAME).touch()  # a missing log with a head: repair records the loss
    handle = _lock(live / "writer.lock", index_path)
    try:
        return repair_log(live / LOG_NAME)
    finally:
        _unlock(handle)


def _lock(lock_path: Path, index_path: Path) -> Any:
    """Take the writer lock (an flock, released by the OS if the process dies) or say who holds it."""
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise WriterLockedError(f"another writer (pid {holder}, a compaction or another process) is changing "
                                f"{index_path}; retry in a moment, there can be only one at a time") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


_RENAME_EXCHANGE = 2


def _exchange(new: Path, current: Path) -> None:
    """Swap two directories in one atomic step (Linux renameat2), so no crash leaves neither in place."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd = -100
        result = renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(current), _RENAME_EXCHANGE)
        if result == 0:
            return
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(current))
    # Fallback (no renameat2): two renames; a crash between them leaves the old copy beside.
    retired = current.parent / f".{current.name}.retired-{uuid.uuid4().hex[:8]}"
    os.rename(current, retired)
    os.rename(new, current)
    os.rename(retired, new)
