"""A test collection in BEIR layout: corpus, queries and qrels per split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rankstack.errors import DataFormatError
from rankstack.io.corpus import find_beir_corpus
from rankstack.io.topics import read_queries
from rankstack.io.trec import read_qrels
from rankstack.types import Qrel, Query


@dataclass(frozen=True)
class BeirDataset:
    """``DIR/corpus.jsonl[.gz]``, ``DIR/queries.jsonl``, ``DIR/qrels/<split>.tsv``."""

    root: Path

    @classmethod
    def open(cls, path: str | Path) -> BeirDataset:
        root = Path(path)
        if not root.is_dir():
            raise DataFormatError("dataset directory not found", path=root,
                                  hint="expected a BEIR directory with corpus.jsonl, queries.jsonl, qrels/")
        if find_beir_corpus(root) is None:
            raise DataFormatError("no corpus.jsonl or corpus.jsonl.gz in the dataset directory", path=root)
        return cls(root)

    @property
    def corpus_path(self) -> Path:
        found = find_beir_corpus(self.root)
        if found is None:  # open() checked it; the folder changed since
            raise DataFormatError("no corpus.jsonl or corpus.jsonl.gz in the dataset directory", path=self.root)
        return found

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def qrels_path(self, split: str) -> Path:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise DataFormatError(f"no qrels for split '{split}'", path=path, hint=f"available splits: {available}")
        return path

    def qrels(self, split: str) -> list[Qrel]:
        return read_qrels(self.qrels_path(split))

    def queries(self, query_ids: set[str] | None = None) -> list[Query]:
        return read_queries(self.root / "queries.jsonl", query_ids)
