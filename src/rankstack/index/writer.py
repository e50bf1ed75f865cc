"""The one writer of an index: add, update (same id), delete, compact and repair.

Changes go to the append-only, fsync'd change log (rankstack.index.changelog) and become visible to
readers through :meth:`rankstack.index.Index.view`; ``compact`` folds them into a new segment, swapped in
atomically while searches go on.
"""

from __future__ import annotations

import base64
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import DataFormatError, EmptyInputError, IndexCorruptError
from rankstack.ids import ID_RULE, id_problem
from rankstack.index._index import LIVE_DIR, Index, log_path
from rankstack.index.changelog import LOG_NAME, ChangeLogWriter, RepairReport, read_head, repair_log
from rankstack.index.live_view import LiveView
from rankstack.index.locking import exchange, lock, unlock
from rankstack.index.staging import staged
from rankstack.types import Doc

logger = logging.getLogger(__name__)


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
        self._lock_file = lock(live / "writer.lock", index.path)
        try:
            _remove_stale_compactions(index.path)
            self._log = ChangeLogWriter(log_path(index.path))
            index.refresh()
        except BaseException:
            unlock(self._lock_file)
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
        from rankstack.index.splade import carry_over

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
        with staged(staging, path, "compacting", kept,
                    "Free some space (a compaction needs room for a second copy) and retry"):
            build_index(view.live_docs(), staging, progress=progress,
                        ignore_identical_ids=manifest.get("ignore_identical_ids", False))
            alive = np.flatnonzero(view.alive)
            for key, entry in manifest.get("dense", {}).items():
                stored = self.index.dense_vectors(entry["model"], entry["precision"], exact=True)
                if stored is None:
                    raise IndexCorruptError(f"{self.index.path} lists vectors '{key}' in its manifest, but they "
                                            "cannot be opened; rebuild the index")
                matrix = view._dense_matrix(stored)[alive]
                write_dense_vectors(staging, key, stored.meta, matrix)
            for model_id in manifest.get("splade", {}):  # SPLADE impacts follow their rows
                carry_over(self.index, view, staging, model_id)
            # Lock the new generation before it becomes visible, so no other writer slips in at the swap.
            (staging / LIVE_DIR).mkdir()
            new_lock = lock(staging / LIVE_DIR / "writer.lock", path)
            self._log.close()
            exchange(staging, path)
        old_lock, self._lock_file = self._lock_file, new_lock
        old_lock.close()
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old directory
        self.index.reopen()
        self._log = ChangeLogWriter(log_path(path))
        return path

    def close(self) -> None:
        self._log.close()
        unlock(self._lock_file)


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
    handle = lock(live / "writer.lock", index_path)
    try:
        return repair_log(live / LOG_NAME)
    finally:
        unlock(handle)
