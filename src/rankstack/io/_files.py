"""Opening text files: plain or gzip, UTF-8 with errors that name the file and line."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from rankstack.errors import DataFormatError


def _open_binary(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line, 1-based, without the line ending.

    Decoding is done line by line so a bad byte is reported with its line number instead of a
    bare UnicodeDecodeError from somewhere in the middle of a file.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError("file not found", path=path)
    try:
        with _open_binary(path) as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataFormatError(
                        f"bytes that are not valid UTF-8 at column {error.start + 1}",
                        path=path, line=line_number,
                        hint="re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
                    ) from None
                if line_number == 1 and text.startswith("\ufeff"):
                    text = text[1:]  # byte-order mark
                yield line_number, text.rstrip("\r\n")
    except (OSError, EOFError) as error:
        if isinstance(error, gzip.BadGzipFile) or isinstance(error, EOFError):
            raise DataFormatError(f"not a readable gzip file ({error})", path=path) from None
        raise DataFormatError(f"cannot read file ({error.strerror or error})", path=path) from None
