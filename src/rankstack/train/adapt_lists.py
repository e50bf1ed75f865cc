"""The data of ``rankstack adapt``: pseudo-queries, their candidates from the hybrid first stage, the
teacher's score of each, kept on disk so an interrupted run does not label again, and the training rows."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankstack.errors import EmptyInputError
from rankstack.index import Index
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.train.adapt_settings import MAX_AUTO_QUERIES, MIN_DOCUMENTS, AdaptSettings, hybrid_pipeline
from rankstack.train.labellers import Labeller
from rankstack.train.pseudo_queries import PseudoQuery, make_pseudo_queries
from rankstack.train.teachers import margin_scale
from rankstack.types import Doc, Query

logger = logging.getLogger(__name__)
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class LabelledList:
    """A pseudo-query, its candidates (its source document first) and the teacher's score of each."""

    query: PseudoQuery
    doc_ids: list[str]
    texts: list[str]
    scores: list[float]
    heldout: bool

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query.to_json(), "doc_ids": self.doc_ids, "texts": self.texts, "scores": self.scores,
                "heldout": self.heldout}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> LabelledList:
        return cls(PseudoQuery.from_json(row["query"]), row["doc_ids"], row["texts"], row["scores"], row["heldout"])


def corpus_documents(index: Index, corpus: str | Path) -> tuple[list[Doc], list[str]]:
    """The documents with text, and the ids of those without; refuses a corpus too small to adapt."""
    view = index.view()
    ids = sorted(view.doc_positions)
    if len(ids) < MIN_DOCUMENTS:
        raise EmptyInputError(f"{len(ids)} documents; adapt needs at least {MIN_DOCUMENTS} to make pseudo-queries "
                              "from. Use the bundled model as it is (pipeline 'rrf(bm25,dense)'), or judge a few "
                              "queries and use `rankstack train`", path=corpus)
    docs = view.get_docs(ids)
    with_text = [docs[d] for d in ids if len(docs[d].text.split()) >= 3]
    without = [d for d in ids if len(docs[d].text.split()) < 3]
    if len(with_text) < MIN_DOCUMENTS:
        raise EmptyInputError(f"{len(without)} of {len(ids)} documents have no text (fewer than 3 words, e.g. "
                              f"{', '.join(without[:3])}); adapt needs at least {MIN_DOCUMENTS} with text. Fill "
                              "the documents' 'text' field (a title alone is not enough)", path=corpus)
    if without:
        logger.warning("%d documents have no text and give no pseudo-queries (e.g. %s)", len(without),
                       ", ".join(without[:3]))
    return with_text, without


def make_queries(docs: list[Doc], settings: AdaptSettings, count: int | None = None) -> list[PseudoQuery]:
    """Pseudo-queries from ``count`` sampled documents (default ``settings.queries``)."""
    rng = random.Random(settings.seed)
    count = count or settings.queries or MAX_AUTO_QUERIES
    chosen = rng.sample(docs, min(len(docs), count))
    if settings.generator:
        from rankstack.train.generators import load_generator

        generate = load_generator(settings.generator, settings.seed, settings.generator_model)
        return make_pseudo_queries(chosen, "generated", settings.seed, generate=generate)
    sample = rng.sample(docs, min(len(docs), 20_000))
    return make_pseudo_queries(chosen, settings.source, settings.seed, corpus_sample=sample)


def label_lists(index: Index, queries: list[PseudoQuery], labeller: Labeller, settings: AdaptSettings,
                progress: ProgressFactory | None = None) -> list[LabelledList]:
    """Mine each query's candidates with the hybrid, put its source document first, label all (``labellers``)."""
    pipeline = parse_pipeline(f"{hybrid_pipeline(settings.hybrid, settings.base)}%{settings.depth}", index)
    pipeline.prepare(progress)
    mined = pipeline.transform([Query(q.query_id, q.text) for q in queries], context=SearchContext())
    others = {q.query_id: [h.doc_id for h in mined[q.query_id] if h.doc_id != q.doc_id][:settings.depth - 1]
              for q in queries}
    texts = index.view().get_docs(sorted({d for ids in others.values() for d in ids}))
    kept = [q for q in queries if others[q.query_id]]
    groups = [(q.text, [q.document, *(texts[d].contents for d in others[q.query_id])]) for q in kept]
    advance = progress("labelling candidates", sum(len(t) for _, t in groups)) if progress else None
    scores = labeller(groups, advance)
    heldout_count = max(1, round(len(kept) * settings.heldout)) if settings.heldout > 0 else 0
    heldout = set(random.Random(settings.seed + 1).sample([q.query_id for q in kept], min(heldout_count, len(kept))))
    return [LabelledList(q, [q.doc_id, *others[q.query_id]], group_texts, [float(s) for s in group_scores],
                         q.query_id in heldout)
            for q, (_, group_texts), group_scores in zip(kept, groups, scores, strict=True)]


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def saved_lists(folder: Path, fingerprint: str) -> list[LabelledList] | None:
    plan, lists = folder / "plan.json", folder / "lists.jsonl"
    if not (plan.is_file() and lists.is_file()):
        return None
    if json.loads(plan.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
        logger.warning("%s was made with other settings; starting over", folder)
        shutil.rmtree(folder)
        return None
    return [LabelledList.from_json(json.loads(line)) for line in lists.read_text(encoding="utf-8").splitlines()]


def save_lists(folder: Path, fingerprint: str, lists: list[LabelledList]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "lists.jsonl", "".join(json.dumps(x.to_json()) + "\n" for x in lists))
    _write_atomic(folder / "plan.json", json.dumps({"fingerprint": fingerprint}) + "\n")


def training_rows(lists: Sequence[LabelledList], negatives: int, seed: int) -> tuple[dict[str, list[Any]], float]:
    """(query, positive, negative, label) columns: the source document against ``negatives`` sampled
    candidates, labelled with the teacher's score margin divided by a scale (returned) that brings the
    teacher's margins to the range of cosine differences."""
    rng = random.Random(seed)
    scale = margin_scale([s for x in lists for s in x.scores])
    columns: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
    for x in lists:
        picked = rng.sample(range(1, len(x.doc_ids)), min(negatives, len(x.doc_ids) - 1))
        for k in picked:
            columns["query"].append(x.query.text)
            columns["positive"].append(x.texts[0])
            columns["negative"].append(x.texts[k])
            columns["label"].append((x.scores[0] - x.scores[k]) / scale)
    return columns, scale
