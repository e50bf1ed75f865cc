"""One rule for document and query ids, applied wherever an id enters: readers, writers, CLI and HTTP.

An id is a non-empty string of printable characters without spaces, at most 1,000 characters, not "."
or "..", kept byte for byte. No spaces because ids are one whitespace-separated column of TREC run and qrels files;
no control or other non-printable characters because they cannot be shown, typed or put in a URL
reliably. An id that breaks the rule is refused with the reason, never trimmed or changed silently
(a trimmed " 1" would quietly replace document "1").
"""

from __future__ import annotations

from pathlib import Path
from typing import cast
from urllib.parse import quote

from rankstack.errors import DataFormatError

MAX_ID_LENGTH = 1000
ID_RULE = ("ids are non-empty, at most 1,000 printable characters, with no spaces, tabs or line breaks, "
           "and not '.' or '..'")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id, or None when it is."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"has {len(value):,} characters (at most {MAX_ID_LENGTH:,})"
    if value in (".", ".."):
        return "is a path step ('.' and '..' are rewritten in URLs, so the document could not be reached)"
    if value.isprintable() and " " not in value:  # str.isprintable is False for every other whitespace
        return None
    position, char = next((i, c) for i, c in enumerate(value) if c == " " or not c.isprintable())
    kind = "a space" if char.isspace() else "a control or non-printable character"
    where = "at its start" if position == 0 else "at its end" if position == len(value) - 1 else \
        f"at position {position + 1}"
    return f"has {kind} ({char!r}) {where}"


def check_id(value: object, what: str = "document id", *, path: str | Path | None = None,
             line: int | None = None) -> str:
    """``value`` when it is a valid id; else a DataFormatError naming it, the place and the rule."""
    problem = id_problem(value)
    if problem is not None:
        raise DataFormatError(f"{what} {value!r} {problem}", path=path, line=line, hint=ID_RULE)
    return cast(str, value)  # id_problem returned None, so it is a string


def id_from_path(relative: str) -> str:
    """A valid id for a file of a folder corpus: its relative path, spaces and the like percent-encoded.

    Only characters the rule forbids (and "%" itself, so the encoding can be undone) are encoded, so
    "notes/a.md" stays as it is and "My Notes/a b.md" becomes "My%20Notes/a%20b.md".
    """
    return "".join(quote(c, safe="") if c == "%" or c == " " or not c.isprintable() else c
                   for c in relative)[:MAX_ID_LENGTH]
