"""Index directories: manifest, SQLite doc store, BM25 postings."""

from rankstack.index._index import Index
from rankstack.index.builder import build_index

__all__ = ["Index", "build_index"]
