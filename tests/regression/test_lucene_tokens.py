"""Token-for-token parity with Lucene 9's EnglishAnalyzer on every document in ../shared/data."""

from __future__ import annotations

import gzip
import json

import pytest

from rankstack.io import read_corpus
from rankstack.text import LuceneEnglishAnalyzer
from tests.conftest import SHARED_DATA, shared_collection

pytestmark = pytest.mark.regression

COLLECTIONS = ("scifact", "cranfield", "cisi", "medline", "trec-dl-2019")


def test_every_document_gives_lucenes_token_sequence() -> None:
    fixture = SHARED_DATA / "lucene-english" / "tokens.jsonl.gz"
    if not fixture.is_file():
        pytest.skip(f"Lucene token fixture not found at {fixture}")
    texts = {}
    for name in COLLECTIONS:
        for doc in read_corpus(shared_collection(name)):
            texts[(name, doc.doc_id)] = (doc.title + " " + doc.text).strip()
    analyzer = LuceneEnglishAnalyzer()
    total, differences = 0, []
    with gzip.open(fixture, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            total += 1
            ours = analyzer.analyze(texts[(record["collection"], record["_id"])])
            if ours != record["tokens"]:
                first = next((i for i, (a, b) in enumerate(zip(ours, record["tokens"], strict=False)) if a != b),
                             min(len(ours), len(record["tokens"])))
                differences.append(f"{record['collection']}/{record['_id']} at token {first}: "
                                   f"Lucene {record['tokens'][first:first + 3]}, ours {ours[first:first + 3]}")
    print(f"\n{total - len(differences):,} of {total:,} documents give exactly Lucene's token sequence")
    assert total == 13_373
    assert not differences, f"{len(differences)} documents differ; first ones:\n" + "\n".join(differences[:20])
