"""JSON Lines records with file and line numbers in every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankstack.errors import DataFormatError
from rankstack.io._files import iter_lines


def iter_json_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file."""
    for line_number, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"malformed JSON ({error.msg} at column {error.colno})", path=path, line=line_number,
                hint="each line must be one complete JSON object",
            ) from None
        if not isinstance(record, dict):
            raise DataFormatError(
                f"expected a JSON object, found {type(record).__name__}", path=path, line=line_number
            )
        yield line_number, record


def require_string(record: dict[str, Any], keys: tuple[str, ...], *, path: str | Path, line: int,
                   allow_empty: bool = True) -> str:
    """Return the first present key of ``keys`` as a string, or raise naming the missing field."""
    for key in keys:
        if key in record and record[key] is not None:
            value = record[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise DataFormatError(
                    f"field '{key}' must be a string, found {type(value).__name__}", path=path, line=line
                )
            if not allow_empty and not value.strip():
                raise DataFormatError(f"field '{key}' is empty", path=path, line=line)
            return value
    names = " or ".join(f"'{k}'" for k in keys)
    raise DataFormatError(f"missing field {names}", path=path, line=line,
                          hint=f"fields present: {', '.join(sorted(record)) or 'none'}")
