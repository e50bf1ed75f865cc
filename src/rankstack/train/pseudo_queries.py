"""Pseudo-queries made from documents alone, for training without judgements (``rankstack adapt``).

Each source promises something a test checks:

* ``title``: the document's title (documents without one give no query);
* ``sentence``: a sentence of the document (inverse cloze task, Lee et al., 2019): most of the time
  (``remove_probability``) the sentence is cut from the document the query is paired with, so the
  model learns to find a document from context rather than by copying words;
* ``span``: a cropped run of 8 to 24 consecutive words of the document (contrastive cropping);
* ``keywords``: three to six of the document's most distinctive words (highest tf-idf against the
  corpus sample), in a seeded random order, as a keyword query a user might type;
* ``generated``: a text generator's query for the document (``generators.py``), InPars style.

Every query reads only documents, never a query or judgement of the collection.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rankstack.errors import RankstackError
from rankstack.text import LUCENE_ENGLISH_STOP_WORDS
from rankstack.train.data import _sentences
from rankstack.types import Doc

PSEUDO_QUERY_SOURCES = ("keywords", "sentence", "span", "title")
DEFAULT_SOURCE = "sentence"
MAX_QUERY_WORDS = 32

_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]", re.UNICODE)
# Lucene's 33 stop words plus common function words that say nothing about a document
_EXTRA_STOP = frozenset("""about above after again against all also am any because been before being below between
both can could did do does doing down during each few from further had has have having he her here hers him his
how i its itself just me more most my myself nor now off once only other our ours out over own same she should
so some than them those through too under until up very was we were what when where which while who whom why
would you your yours we've it's however may might must shall among within without via using used use""".split())
STOP_WORDS = frozenset(LUCENE_ENGLISH_STOP_WORDS) | _EXTRA_STOP


def check_source(source: str) -> None:
    if source not in PSEUDO_QUERY_SOURCES and source != "generated":
        raise RankstackError(f"unknown pseudo-query source {source!r}; pass --source one of "
                             f"{', '.join(PSEUDO_QUERY_SOURCES)} (or --generator for generated queries)")


@dataclass(frozen=True)
class PseudoQuery:
    """A query made from document ``doc_id``; ``document`` is the text it is paired with in training
    (the document, or for an inverse-cloze sentence the document without that sentence)."""

    query_id: str
    text: str
    doc_id: str
    source: str
    document: str
    removed: bool = False

    def to_json(self) -> dict[str, object]:
        return {"query_id": self.query_id, "text": self.text, "doc_id": self.doc_id, "source": self.source,
                "document": self.document, "removed": self.removed}

    @classmethod
    def from_json(cls, row: dict[str, object]) -> PseudoQuery:
        return cls(str(row["query_id"]), str(row["text"]), str(row["doc_id"]), str(row["source"]),
                   str(row["document"]), bool(row.get("removed", False)))


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def _content_words(text: str) -> list[str]:
    return [w.lower() for w in words(text) if len(w) > 2 and w.lower() not in STOP_WORDS]


def document_frequencies(docs: Sequence[Doc]) -> Counter[str]:
    frequencies: Counter[str] = Counter()
    for doc in docs:
        frequencies.update(set(_content_words(doc.contents)))
    return frequencies


def distinctive_terms(doc: Doc, frequencies: Counter[str], total_docs: int, count: int = 10) -> list[str]:
    """The document's words by tf-idf against the corpus sample, most distinctive first (ties by word)."""
    tf = Counter(_content_words(doc.contents))
    scored = sorted(tf, key=lambda w: (-(1 + math.log(tf[w])) * math.log((total_docs + 1) / (frequencies[w] + 1)),
                                       w))
    return scored[:count]


def _title(doc: Doc, rng: random.Random) -> tuple[str, str, bool] | None:
    title = doc.title.strip()
    return (title, doc.contents, False) if title else None


def _sentence(doc: Doc, rng: random.Random, remove_probability: float) -> tuple[str, str, bool] | None:
    sentences = _sentences(doc.text)
    if len(sentences) < 2:  # removing the only sentence would leave nothing to find
        return None
    chosen = rng.choice(sentences)
    if rng.random() < remove_probability:
        rest = doc.text.replace(chosen, " ", 1)
        return chosen, Doc(doc.doc_id, " ".join(rest.split()), doc.title).contents, True
    return chosen, doc.contents, False


def _span(doc: Doc, rng: random.Random) -> tuple[str, str, bool] | None:
    tokens = doc.text.split()
    if len(tokens) < 8:
        return None
    length = rng.randint(8, min(24, len(tokens)))
    start = rng.randint(0, len(tokens) - length)
    return " ".join(tokens[start:start + length]), doc.contents, False


def _keywords(doc: Doc, rng: random.Random, frequencies: Counter[str], total: int) -> tuple[str, str, bool] | None:
    terms = distinctive_terms(doc, frequencies, total)
    if len(terms) < 3:
        return None
    chosen = rng.sample(terms[:8], min(len(terms[:8]), rng.randint(3, 6)))
    return " ".join(chosen), doc.contents, False


def make_pseudo_queries(docs: Sequence[Doc], source: str, seed: int = 42, remove_probability: float = 0.9,
                        corpus_sample: Sequence[Doc] | None = None,
                        generate: Callable[[list[Doc]], list[str]] | None = None) -> list[PseudoQuery]:
    """One query per document of ``docs`` that can give one (see the module's list), in order.
    ``corpus_sample`` gives the document frequencies of ``keywords`` (default: ``docs`` themselves);
    ``generate`` makes the ``generated`` queries."""
    check_source(source)
    rng = random.Random(seed)
    frequencies = document_frequencies(corpus_sample or docs) if source == "keywords" else Counter()
    total = len(corpus_sample or docs)
    made: list[tuple[Doc, tuple[str, str, bool] | None]] = []
    if source == "generated":
        if generate is None:
            raise RankstackError("generated pseudo-queries need a generator; pass --generator")
        texts = generate(list(docs))
        made = [(doc, (text, doc.contents, False) if text.strip() else None)
                for doc, text in zip(docs, texts, strict=True)]
    else:
        for doc in docs:
            if source == "title":
                made.append((doc, _title(doc, rng)))
            elif source == "sentence":
                made.append((doc, _sentence(doc, rng, remove_probability)))
            elif source == "span":
                made.append((doc, _span(doc, rng)))
            else:
                made.append((doc, _keywords(doc, rng, frequencies, total)))
    queries: list[PseudoQuery] = []
    for doc, result in made:
        if result is None:
            continue
        text, document, removed = result
        text = " ".join(text.split()[:MAX_QUERY_WORDS])
        if text:
            queries.append(PseudoQuery(f"adapt-{len(queries)}", text, doc.doc_id, source, document, removed))
    return queries
