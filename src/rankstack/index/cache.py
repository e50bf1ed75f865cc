"""Reusing an index built earlier for the same corpus (``rankstack eval`` builds on demand).

Only indexes in eval's own cache are ever rebuilt, and never one with live changes: an index the
user named with ``--index`` may hold documents added since, or belong to another dataset, so a stale or
foreign one is refused with the command that rebuilds it instead of being overwritten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rankstack._cache_dir import cache_root
from rankstack.errors import IndexLoadError, RankstackError
from rankstack.index._index import Index
from rankstack.index.builder import ProgressCallback, build_index, corpus_fingerprint


class IndexMismatchError(RankstackError):
    """An existing index does not match the corpus it should serve, and is not ours to rebuild."""


def default_index_path(corpus: str | Path) -> Path:
    resolved = Path(corpus).resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:12]
    return cache_root() / "indexes" / f"{resolved.name}-{digest}"


def has_live_changes(path: Path) -> bool:
    log = path / "live" / "changes.log"
    return log.is_file() and log.stat().st_size > 0


def open_or_build(corpus: str | Path, index_path: str | Path | None = None,
                  progress: ProgressCallback | None = None) -> tuple[Index, bool]:
    """Open the index of ``corpus`` if an up-to-date one exists, else build it. Returns (index, built).

    ``index_path`` None means eval's own cache, where a stale or damaged index is rebuilt; an index at a
    path the caller chose is only ever created, never replaced.
    """
    own = index_path is None
    path = default_index_path(corpus) if own else Path(index_path)  # type: ignore[arg-type]
    if path.exists():
        stale = _stale_reason(path, corpus, own)
        if stale is None:
            return Index.open(path), False
        if not own or has_live_changes(path):
            rebuild = f"rankstack index {corpus} -o {path} --overwrite"
            live = " It has live changes (documents added or deleted since it was built), which a rebuild " \
                   "would lose." if has_live_changes(path) else ""
            raise IndexMismatchError(
                f"{path} {stale}; eval does not overwrite an index it did not create.{live} "
                f"Rebuild it yourself ({rebuild}), or {'leave out --index' if not own else 'remove it'} "
                "to let eval build its own")
    build_index(corpus, path, overwrite=True, progress=progress)
    return Index.open(path, verify_checksums=False), True


def _stale_reason(path: Path, corpus: str | Path, own: bool) -> str | None:
    """Why the index at ``path`` cannot serve ``corpus`` (None: it can)."""
    try:
        index = Index.open(path)
    except IndexLoadError as error:
        return f"cannot be used ({error})"
    try:
        source = index.manifest.get("source")
        if index.manifest.get("source_fingerprint") == corpus_fingerprint(corpus):
            return None
        if source and Path(str(source)) != Path(corpus).resolve():
            return f"is an index of {source}, not of {Path(corpus).resolve()}"
        return "was built from an older version of this dataset's corpus"
    finally:
        index.close()
