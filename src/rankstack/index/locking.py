"""File-system primitives of the single writer: the writer lock and the atomic directory swap."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import uuid
from pathlib import Path
from typing import Any

from rankstack.errors import WriterLockedError


def unlock(handle: Any) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def lock(lock_path: Path, index_path: Path) -> Any:
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


def exchange(new: Path, current: Path) -> None:
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
