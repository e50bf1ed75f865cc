"""SQLite document store: random access by id or by internal number, crash-safe by SQLite's journal."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from rankstack.errors import DuplicateIdError
from rankstack.types import Doc

_SCHEMA = """
CREATE TABLE docs (
    idx INTEGER PRIMARY KEY,      -- internal document number, the row of the sparse/dense arrays
    doc_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL
);
"""


class DocStoreWriter:
    """Appends documents in insertion order; ``idx`` is 0, 1, 2, ...

    Duplicate ids are caught by the UNIQUE constraint; the error names where the repeat was read.
    """

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path)
        # The file lives in a temporary build directory until the whole index is renamed into
        # place, so SQLite's per-transaction durability buys nothing here; the builder fsyncs once.
        self._connection.execute("PRAGMA journal_mode=OFF")
        self._connection.execute("PRAGMA synchronous=OFF")
        self._connection.executescript(_SCHEMA)
        self._pending: list[tuple[int, str, str, str]] = []
        self._pending_locations: list[object] = []
        self.count = 0

    def add(self, doc: Doc, location: object = None) -> int:
        idx = self.count
        self._pending.append((idx, doc.doc_id, doc.title, doc.text))
        self._pending_locations.append(location)
        self.count += 1
        if len(self._pending) >= 2000:
            self.flush()
        return idx

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            with self._connection:
                self._connection.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", self._pending)
        except sqlite3.IntegrityError:
            self._raise_duplicate()
        self._pending.clear()
        self._pending_locations.clear()

    def _raise_duplicate(self) -> None:
        for row, location in zip(self._pending, self._pending_locations, strict=True):
            try:
                with self._connection:
                    self._connection.execute("INSERT INTO docs VALUES (?, ?, ?, ?)", row)
            except sqlite3.IntegrityError:
                path, line = getattr(location, "path", None), getattr(location, "line", None)
                raise DuplicateIdError(f"duplicate document id '{row[1]}'", path=path, line=line,
                                       hint="document ids must be unique; remove or rename one copy") from None
        raise AssertionError("unreachable: a batch failed but every row inserted alone")

    def close(self) -> None:
        self.flush()
        self._connection.commit()
        self._connection.close()


class DocStore:
    """Read-only access to the documents of an index."""

    def __init__(self, path: Path) -> None:
        # check_same_thread=False: the service reads from worker threads; reads do not mutate.
        self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def doc_ids(self) -> list[str]:
        return [row[0] for row in self._connection.execute("SELECT doc_id FROM docs ORDER BY idx")]

    def get(self, doc_id: str) -> Doc | None:
        row = self._connection.execute("SELECT doc_id, text, title FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        return Doc(*row) if row else None

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Doc]:
        found: dict[str, Doc] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._connection.execute(
                f"SELECT doc_id, text, title FROM docs WHERE doc_id IN ({marks})", chunk
            ):
                found[row[0]] = Doc(*row)
        return found

    def range(self, start: int, stop: int) -> list[Doc]:
        """Documents with internal numbers start..stop-1, in order."""
        rows = self._connection.execute(
            "SELECT doc_id, text, title FROM docs WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop))
        return [Doc(*row) for row in rows]

    def close(self) -> None:
        self._connection.close()
