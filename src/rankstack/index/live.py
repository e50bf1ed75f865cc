"""Live indexes: add, update and delete documents without a rebuild, with exact BM25 statistics.

The parts live in their own modules: the snapshot (rankstack.index.live_view), the change log
(rankstack.index.changelog), the writer (rankstack.index.writer), the writer lock and directory swap
(rankstack.index.locking); :class:`rankstack.index.Index` owns its live state. This module gathers the
names users import.
"""

from __future__ import annotations

from rankstack.errors import WriterLockedError
from rankstack.index.live_view import AddedDoc, LiveView, empty_view
from rankstack.index.writer import DeleteReport, IndexWriter, repair

__all__ = ["AddedDoc", "DeleteReport", "IndexWriter", "LiveView", "WriterLockedError", "empty_view", "repair"]
