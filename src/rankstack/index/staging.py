"""Building in a staging directory: removed if anything fails, and a full disk said plainly.

An index build and a compaction both write a complete new directory beside the target and only then
move it into place, so a failure leaves the target as it was; this is the one place that cleans up.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankstack.errors import DiskFullError, is_disk_full


@contextmanager
def staged(staging: Path, target: Path, doing: str, kept: str, retry: str) -> Iterator[Path]:
    """Run the block that fills ``staging``; on any failure remove it, and turn a full disk into a
    :class:`DiskFullError` naming ``target``, what was ``kept`` and how to ``retry``."""
    try:
        yield staging
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and is_disk_full(error):
            raise DiskFullError(f"no space left on the device of {target} while {doing}; {kept}. {retry}") from None
        raise
