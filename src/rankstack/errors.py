"""One exception tree for rankstack.

Every error a user can cause derives from :class:`RankstackError`. The CLI maps these to exit
codes in one place (``EXIT_CODES``); the HTTP service maps them to statuses the same way.
"""

from __future__ import annotations

import errno
from pathlib import Path


class RankstackError(Exception):
    """Base of every error rankstack raises on purpose."""


class DataFormatError(RankstackError):
    """Input data is malformed. Names the file and, where known, the line."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        text = f"{where}{message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class EmptyInputError(DataFormatError):
    """A corpus, query set or query that must not be empty is empty."""


class DuplicateIdError(DataFormatError):
    """The same id appears twice where ids must be unique."""


class IndexLoadError(RankstackError):
    """An index directory is missing, damaged, or of an unsupported format."""


class IndexNotFoundError(IndexLoadError):
    pass


class IndexFormatError(IndexLoadError):
    """The index was written by a newer (or unknown) format version."""


class IndexCorruptError(IndexLoadError):
    """A file of the index does not match the checksum in its manifest, or is missing."""


class ChangeLogDamagedError(IndexCorruptError):
    """The live change log holds a damaged record before its end (not a torn last write).

    Records after the damage may be intact, so trimming there would drop acknowledged writes; the index
    refuses to open until ``rankstack repair`` keeps what can be proven good and reports what is lost.
    """


class WriterLockedError(RankstackError):
    """Another writer (a compaction, another process) holds the index; retry shortly."""

    retry_after_seconds = 1


class DiskFullError(RankstackError):
    """The disk filled while writing; the message says what was kept."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is the disk (or quota) filling up, as the OS or SQLite reports it."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return type(error).__name__ == "OperationalError" and "full" in str(error).lower()  # sqlite3


class PipelineError(RankstackError):
    """A pipeline string or stage configuration is invalid."""


class UnknownStageError(PipelineError):
    pass


class MeasureError(RankstackError):
    """An evaluation measure string is not understood."""


class NotFoundError(RankstackError):
    """A document (or other named thing) does not exist."""


class RequestLimitError(RankstackError):
    """A request exceeds a configured bound (query length, number of hits)."""


class AuthenticationError(RankstackError):
    """A write request without the right API key."""


class WritesDisabledError(RankstackError):
    """The service was started without an API key, so it accepts no writes."""


class ModelLoadError(RankstackError):
    """A model path or id could not be loaded."""


class MissingExtraError(RankstackError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{module}' package, which is not installed. "
            f"Install it with: pip install 'rankstack[{extra}]'"
        )
        self.extra = extra
        self.module = module


# One place that turns domain errors into process exit codes (most specific first).
EXIT_CODES: list[tuple[type[RankstackError], int]] = [
    (MissingExtraError, 3),
    (IndexLoadError, 4),
    (DiskFullError, 7),
    (WriterLockedError, 8),
    (PipelineError, 5),
    (MeasureError, 5),
    (DataFormatError, 6),
    (RankstackError, 1),
]


def _first_match(table: list[tuple[type[RankstackError], int]], error: RankstackError, default: int) -> int:
    return next((value for error_type, value in table if isinstance(error, error_type)), default)


def exit_code_for(error: RankstackError) -> int:
    return _first_match(EXIT_CODES, error, 1)


# One place that turns domain errors into HTTP statuses (most specific first).
HTTP_STATUSES: list[tuple[type[RankstackError], int]] = [
    (AuthenticationError, 401),
    (WritesDisabledError, 403),
    (NotFoundError, 404),
    (RequestLimitError, 422),
    (EmptyInputError, 422),
    (MissingExtraError, 501),
    (WriterLockedError, 409),
    (DiskFullError, 507),
    (IndexLoadError, 503),
    (PipelineError, 400),
    (MeasureError, 400),
    (DataFormatError, 400),
    (RankstackError, 400),
]


def http_status_for(error: RankstackError) -> int:
    return _first_match(HTTP_STATUSES, error, 400)
