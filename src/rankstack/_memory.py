"""Handing memory back to the operating system after a large structure is dropped.

A compaction swaps a whole new segment in; the old one's many small Python objects (document ids,
postings of live documents) are freed, but glibc keeps the freed pages in its heaps, so a long-running
server's RSS would climb by a segment's worth at every compaction. ``malloc_trim`` returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only; musl and others have no such call
    except (OSError, AttributeError):
        return None


def return_free_memory() -> None:
    """Return free heap pages to the OS where the C library allows it (glibc); elsewhere nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
