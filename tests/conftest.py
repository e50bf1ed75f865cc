from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests never reach a model hub: a model id that is not on disk must fail fast, not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_DOCS = [
    {"_id": "d1", "title": "Cats", "text": "The cat sat on the mat. Cats are small domestic felines."},
    {"_id": "d2", "title": "Dogs", "text": "A dog is a loyal companion; dogs bark at cats."},
    {"_id": "d3", "title": "", "text": "Felines and canines: the cat and the dog are both popular pets."},
    {"_id": "d4", "title": "Fish", "text": "Goldfish swim in a bowl of water."},
    {"_id": "d5", "title": "Birds", "text": "Parrots can learn words; a parrot's feathers are bright."},
    {"_id": "q1", "title": "", "text": "this document shares its id with query q1 about cats"},
]
TINY_QUERIES = [
    {"_id": "q1", "text": "cat on a mat"},
    {"_id": "q2", "text": "loyal dogs"},
    {"_id": "q3", "text": "parrot feathers"},
    {"_id": "q4", "text": "the of and"},  # only stop words: no hits
]
TINY_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t2\nq3\td5\t1\nq4\td4\t1\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", TINY_DOCS)
    write_jsonl(root / "queries.jsonl", TINY_QUERIES)
    (root / "qrels" / "test.tsv").write_text(TINY_QRELS, encoding="utf-8")
    return root


@pytest.fixture
def tiny_index(tiny_beir: Path, tmp_path: Path):
    from rankstack.index import Index, build_index

    path = build_index(tiny_beir, tmp_path / "index")
    index = Index.open(path)
    yield index
    index.close()


def shared_collection(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"test collection {name} not found at {path} (regression data is optional)")
    return path
