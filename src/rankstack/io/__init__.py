"""Readers and writers: BEIR directories, JSONL/TSV/CSV corpora, text folders, TREC qrels and runs."""

from rankstack.io.beir import BeirDataset
from rankstack.io.corpus import SourceLocation, is_beir_directory, iter_corpus, read_corpus
from rankstack.io.topics import read_queries
from rankstack.io.trec import read_qrels, read_run, write_run

__all__ = [
    "BeirDataset", "SourceLocation", "is_beir_directory", "iter_corpus", "read_corpus", "read_queries",
    "read_qrels", "read_run", "write_run",
]
