"""An opened index directory: the immutable segment plus the live changes logged since.

``Index`` is the handle users hold. It owns its live state: the change log it has read so far, and
the snapshot (:class:`rankstack.index.live_view.LiveView`) those changes make of the segment. Changes
written by an :class:`rankstack.index.writer.IndexWriter` (in this process or another) appear in the
next :meth:`Index.view`.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from threading import RLock
from typing import Any, BinaryIO

import bm25s
import numpy as np

from rankstack._memory import return_free_memory
from rankstack.index.changelog import LOG_NAME, LogScan, damage_error, read_head, read_log
from rankstack.index.dense import DenseVectors
from rankstack.index.docstore import DocStore
from rankstack.index.live_view import LiveView, empty_view
from rankstack.index.segment import Segment
from rankstack.index.sparse import SparseIndex
from rankstack.index.splade import SpladeImpacts
from rankstack.index.view import IndexView
from rankstack.text.analyzer import LuceneEnglishAnalyzer

LIVE_DIR = "live"


def log_path(path: Path) -> Path:
    return path / LIVE_DIR / LOG_NAME


class Index:
    """An index directory. Open with :meth:`Index.open`; the manifest is checked first.

    Reads go through :meth:`view`, an immutable snapshot; changes written by an
    :class:`rankstack.index.live.IndexWriter` (in this process or another) appear in the next view.
    """

    def __init__(self, segment: Segment) -> None:
        self.path = segment.path
        self._segment = segment
        self._live: LiveView | None = None  # once changes are logged
        self._log_offset = 0  # bytes of the change log already applied to ``_live``
        self._log_seq = 0  # sequence number of the last record applied
        self._log_handle: BinaryIO | None = None  # held open: a file replacing it has another inode
        self._refresh_lock = RLock()  # held while the log is read and while the segment is swapped

    @classmethod
    def open(cls, path: str | Path, verify_checksums: bool = True) -> Index:
        return cls(Segment.open(path, verify_checksums))

    # --- the immutable part ---
    @property
    def segment(self) -> Segment:
        return self._segment

    @property
    def manifest(self) -> dict[str, Any]:
        return self._segment.manifest

    @property
    def analyzer(self) -> LuceneEnglishAnalyzer:
        return self._segment.analyzer

    @property
    def docstore(self) -> DocStore:
        """The segment's documents (live additions and deletions are seen through :meth:`view`)."""
        return self._segment.docstore

    @property
    def sparse(self) -> SparseIndex:
        return self._segment.sparse

    @property
    def ignore_identical_ids(self) -> bool:
        return self._segment.ignore_identical_ids

    def bm25_retriever(self, k1: float, b: float) -> bm25s.BM25:
        return self._segment.bm25_retriever(k1, b)

    def dense_keys(self) -> list[str]:
        return self._segment.dense_keys()

    def dense_vectors(self, model_id: str, precision: str | None = None, exact: bool = False
                      ) -> DenseVectors | None:
        return self._segment.dense_vectors(model_id, precision, exact)

    def splade_keys(self) -> list[str]:
        return self._segment.splade_keys()

    def late_interaction_keys(self) -> list[str]:
        return self._segment.late_interaction_keys()

    def splade_impacts(self, model_id: str) -> SpladeImpacts | None:
        return self._segment.splade_impacts(model_id)

    def reload_manifest(self) -> None:
        self._segment.reload_manifest()

    # --- the current state, live changes included ---
    def view(self) -> IndexView:
        """A consistent snapshot (Segment or LiveView) to read documents and scores from."""
        self.refresh()
        return self._live if self._live is not None else self._segment

    @property
    def num_docs(self) -> int:
        return int(self.view().num_docs)

    @property
    def doc_ids(self) -> list[str]:
        return list(self.view().doc_positions)

    @property
    def doc_id_array(self) -> np.ndarray:
        return self.view().doc_id_array

    @property
    def doc_id_ranks(self) -> np.ndarray:
        return self.view().doc_id_ranks

    @property
    def doc_positions(self) -> dict[str, int]:
        return self.view().doc_positions

    def refresh(self) -> None:
        """Apply changes other writers logged since the last look (a few stat calls when there are none)."""
        apply_log_tail(self)

    def reopen(self) -> None:
        """Switch to the directory's current files (after a compaction); readers of old views finish."""
        with self._refresh_lock:
            retired, self._segment = self._segment, Segment.open(self.path, verify_checksums=False)
            self._live = None
            self._log_offset = 0
            self._log_seq = 0
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
        # Views still reading the old segment keep it alive; once the last one lets go, hand the freed
        # memory back (a server would otherwise grow by a segment's worth at every compaction).
        weakref.finalize(retired, return_free_memory)
        del retired

    def close(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self._segment.close()


def apply_log_tail(index: Index) -> None:
    """Bring ``index`` up to date with its change log (three stat calls when nothing changed).

    Changes are noticed without any chance of collision: the index holds its log (and its manifest)
    open, so a file that replaced either cannot have the same inode; the log itself only grows between
    replacements, and its records carry sequence numbers that must follow on.
    """
    log = log_path(index.path)
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
