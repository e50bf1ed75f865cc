"""Reusing an index built earlier for the same corpus (``rankstack eval`` builds on demand)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rankstack.errors import IndexLoadError
from rankstack.index._index import Index
from rankstack.index.builder import ProgressCallback, build_index, corpus_fingerprint


def cache_root() -> Path:
    configured = os.environ.get("RANKSTACK_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rankstack"


def default_index_path(corpus: str | Path) -> Path:
    resolved = Path(corpus).resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:12]
    return cache_root() / "indexes" / f"{resolved.name}-{digest}"


def open_or_build(corpus: str | Path, index_path: str | Path | None = None,
                  progress: ProgressCallback | None = None) -> tuple[Index, bool]:
    """Open the index of ``corpus`` if an up-to-date one exists, else build it. Returns (index, built)."""
    path = Path(index_path) if index_path else default_index_path(corpus)
    if path.exists():
        try:
            index = Index.open(path)
            if index.manifest.get("source_fingerprint") == corpus_fingerprint(corpus):
                return index, False
            index.close()
        except IndexLoadError:
            pass  # damaged or from another version: rebuild below
    build_index(corpus, path, overwrite=True, progress=progress)
    return Index.open(path, verify_checksums=False), True
