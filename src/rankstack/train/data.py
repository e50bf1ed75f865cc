"""Training examples from a collection's qrels, with hard negatives mined by a first-stage pipeline."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

from rankstack.errors import EmptyInputError, RankstackError
from rankstack.io import BeirDataset
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.types import Query

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    # (query, positive document, hard negative documents): one example per judged positive
    examples: list[tuple[str, str, tuple[str, ...]]]
    dev_queries: list[Query]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def triples(self) -> list[tuple[str, str, str]]:
        """(query, positive, negative) for every hard negative of every example."""
        return [(query, positive, negative) for query, positive, negatives in self.examples
                for negative in negatives]

    def to_json(self) -> dict[str, Any]:
        return {"examples": len(self.examples), "negatives_per_example": self.negatives_per_example,
                "dev_queries": len(self.dev_queries), "skipped": self.skipped}

    @property
    def negatives_per_example(self) -> int:
        return len(self.examples[0][2]) if self.examples else 0


@dataclass
class _Judgements:
    queries: dict[str, Query]
    positives: dict[str, list[str]]  # query id -> judged relevant documents
    judged: dict[str, set[str]]  # query id -> every judged document
    skipped: dict[str, int]


def _judgements(dataset: BeirDataset, index: Any, split: str) -> _Judgements:
    """The split's qrels for known queries and documents; rows naming others are counted and skipped."""
    qrels = dataset.qrels(split)
    queries = {q.query_id: q for q in dataset.queries()}
    known_docs = index.view().doc_positions
    skipped = {"qrels_unknown_query": 0, "qrels_unknown_document": 0}
    positives: dict[str, list[str]] = {}
    judged: dict[str, set[str]] = {}
    for qrel in qrels:
        if qrel.query_id not in queries:
            skipped["qrels_unknown_query"] += 1
            continue
        if qrel.doc_id not in known_docs:
            skipped["qrels_unknown_document"] += 1
            continue
        judged.setdefault(qrel.query_id, set()).add(qrel.doc_id)
        if qrel.relevance > 0:
            positives.setdefault(qrel.query_id, []).append(qrel.doc_id)
    if any(skipped.values()):
        logger.warning("skipped qrels rows naming unknown queries (%d) or documents (%d)",
                       skipped["qrels_unknown_query"], skipped["qrels_unknown_document"])
    if not positives:
        raise EmptyInputError(f"the '{split}' qrels of {dataset.root} have no positive judgements for known queries "
                              f"and documents; nothing to train on")
    return _Judgements(queries, positives, judged, skipped)


def _held_out(judgements: _Judgements, dev_fraction: float, seed: int) -> tuple[set[str], list[str]]:
    """A seeded fraction of the queries with positives for dev, the rest for training."""
    query_ids = sorted(judgements.positives)
    random.Random(seed).shuffle(query_ids)
    dev_count = int(len(query_ids) * dev_fraction)
    return set(query_ids[:dev_count]), query_ids[dev_count:]


def dev_queries(dataset: BeirDataset, index: Any, split: str = "train", dev_fraction: float = 0.1,
                seed: int = 42) -> list[Query]:
    """The queries ``mine_examples`` holds out with the same arguments, without mining anything."""
    judgements = _judgements(dataset, index, split)
    return [judgements.queries[q] for q in sorted(_held_out(judgements, dev_fraction, seed)[0])]


def mine_examples(dataset: BeirDataset, index: Any, split: str = "train", miner: str = "bm25%30",
                  negatives_per_positive: int = 1, dev_fraction: float = 0.1, seed: int = 42) -> TrainingData:
    """One (query, positive, hard negatives) example per judged positive; negatives are the miner's
    highest-ranked documents that are not judged at all (judged non-relevant ones are fine negatives too,
    but a judged document is never a false negative). Successive positives of a query take successive
    negatives. A seeded fraction of the queries is held out as a dev set for model selection."""
    judgements = _judgements(dataset, index, split)
    queries, positives, judged, skipped = (judgements.queries, judgements.positives, judgements.judged,
                                           judgements.skipped)
    dev_ids, train_ids = _held_out(judgements, dev_fraction, seed)
    train_queries = [queries[q] for q in sorted(train_ids)]
    mined = parse_pipeline(miner, index).transform(train_queries, context=SearchContext(ignore_identical_ids=True))
    docs = index.view().get_docs(sorted({d for q in train_queries for d in positives[q.query_id]} |
                                        {h.doc_id for q in train_queries for h in mined[q.query_id]}))
    examples = []
    for query in train_queries:
        negatives = [h.doc_id for h in mined[query.query_id] if h.doc_id not in judged[query.query_id]]
        if not negatives:
            skipped["queries_without_negatives"] = skipped.get("queries_without_negatives", 0) + 1
            continue
        for position, positive in enumerate(positives[query.query_id]):
            chosen = [negatives[(position * negatives_per_positive + k) % len(negatives)]
                      for k in range(negatives_per_positive)]
            examples.append((query.text, docs[positive].contents, tuple(docs[n].contents for n in chosen)))
    return TrainingData(examples, [queries[q] for q in sorted(dev_ids)], skipped)


def dev_qrels(dataset: BeirDataset, split: str, dev: list[Query]) -> list[Any]:
    wanted = {q.query_id for q in dev}
    return [q for q in dataset.qrels(split) if q.query_id in wanted]


PSEUDO_QUERY_SOURCES = ("title", "sentence")


def check_pseudo_query_source(source: str) -> None:
    if source not in PSEUDO_QUERY_SOURCES:
        raise RankstackError(f"unknown pseudo-query source {source!r}; pass --pseudo-query-source "
                             f"{' or '.join(PSEUDO_QUERY_SOURCES)}")


def _sentences(text: str) -> list[str]:
    """A text's sentences of at least six words (shorter ones are mostly headings and numbers)."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]


def pseudo_query_lists(index: Any, count: int, miner: str = "bm25%30", documents_per_list: int = 8,
                       seed: int = 42, source: str = "title") -> list[tuple[str, str, tuple[str, ...]]]:
    """Unlabelled (query, document, other documents) lists for distillation, built from the collection
    itself: a seeded sample of documents, each one giving a query, the document first, then the miner's
    best other documents. The query is the document's ``title`` (without one, its first sentence) or a
    seeded random ``sentence`` of its text, closer to claim-like queries (SciFact's claims often restate
    one sentence of an abstract).

    A teacher needs no relevance labels, so these add training lists far beyond the few hundred judged
    queries of a small collection; they read only documents, never a test query or judgement.
    """
    check_pseudo_query_source(source)
    view = index.view()
    every = sorted(view.doc_positions)
    rng = random.Random(seed)
    chosen = rng.sample(every, min(count, len(every)))
    sources = view.get_docs(chosen)
    queries: list[Query] = []
    source_ids: list[str] = []
    for doc_id in chosen:
        doc = sources[doc_id]
        sentences = _sentences(doc.text) if source == "sentence" else []
        text = rng.choice(sentences) if sentences else doc.title.strip() or doc.text.split(". ")[0]
        text = " ".join(text.split()[:32])
        if text:
            queries.append(Query(f"pseudo-{len(queries)}", text))
            source_ids.append(doc_id)
    mined = parse_pipeline(miner, index).transform(queries, context=SearchContext())
    others = {q.query_id: [h.doc_id for h in mined[q.query_id] if h.doc_id != source][:documents_per_list - 1]
              for q, source in zip(queries, source_ids, strict=True)}
    texts = {**sources, **view.get_docs(sorted({d for ids in others.values() for d in ids} - sources.keys()))}
    return [(q.text, texts[source].contents, tuple(texts[d].contents for d in others[q.query_id]))
            for q, source in zip(queries, source_ids, strict=True)
            if len(others[q.query_id]) == documents_per_list - 1]
