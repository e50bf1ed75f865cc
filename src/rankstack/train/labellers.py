"""What labels ``rankstack adapt``'s candidates: a teacher cross-encoder, or the hybrid first stage itself.

* ``teacher``: the cross-encoder's raw score of each (pseudo-query, candidate) pair (GPL).
* ``hybrid``: no cross-encoder at all. Each pair gets its BM25 score (the index's statistics, Lucene's
  arithmetic) and the unadapted bi-encoder's cosine; each is standardised within the pseudo-query's list
  and the two are averaged, as the z-score hybrid fuses them at search time. The candidate texts are
  scored as they are paired in training (for an inverse-cloze query, its document without the sentence),
  so the label never credits a copied sentence.

Standardised labels are on one scale across lists, which MarginMSE needs (``margin_scale`` then maps them
to cosine differences as it does raw teacher scores).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rankstack.errors import RankstackError
from rankstack.index import Index
from rankstack.index.lucene_bm25 import idf, posting_scores
from rankstack.train.adapt_settings import AdaptError
from rankstack.train.teachers import resolve_teacher, score_pairs

LABELS = ("auto", "teacher", "hybrid")
"""``auto``: the teacher when one is given or found offline, else the hybrid (adapt then needs no download)."""
Groups = Sequence[tuple[str, Sequence[str]]]
"""(query, the texts of its candidates) for each pseudo-query."""
Labeller = Callable[[Groups, Callable[[int], None] | None], list[np.ndarray]]


def check_labels(labels: str) -> None:
    if labels not in LABELS:
        raise RankstackError(f"unknown labels {labels!r}; pass --labels one of {', '.join(LABELS)}")


def choose_labels(labels: str, teacher: str | None) -> tuple[str, str | None, str]:
    """(the labels used, the teacher's location or None, how the teacher was found or why there is none)."""
    check_labels(labels)
    if labels == "hybrid":
        return "hybrid", None, "not used: labels from the hybrid"
    if labels == "auto" and not teacher:
        try:
            location, how = resolve_teacher(None)
        except AdaptError:
            return "hybrid", None, "no cross-encoder available offline: labels from the hybrid"
        return "teacher", location, how
    location, how = resolve_teacher(teacher)
    return ("teacher" if labels == "auto" else labels), location, how


def standardised(scores: np.ndarray) -> np.ndarray:
    """Scores minus their mean, over their standard deviation (a list of equal scores gives zeros)."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std()
    return (scores - scores.mean()) / spread if spread > 1e-9 else np.zeros_like(scores)


class LexicalScorer:
    """BM25 of a query against any text, with the index's document frequencies and average length, so a
    text that is not in the index (a document without its inverse-cloze sentence) is scored like one that
    is."""

    def __init__(self, index: Index, k1: float = 0.9, b: float = 0.4) -> None:
        self.analyzer, self.view = index.analyzer, index.view()
        self.doc_count = max(self.view.indexed_doc_count(), 1)
        self.avg_length = max(self.view.average_doc_length(), 1.0)
        self.k1, self.b = k1, b
        self._doc_freqs: dict[str, int] = {}
        # a candidate is in many queries' lists: each text is analysed once (bounded, as a corpus can be large)
        self._analysed: dict[str, tuple[Counter[str], int]] = {}

    def _terms(self, text: str) -> tuple[Counter[str], int]:
        found = self._analysed.get(text)
        if found is None:
            analysed = self.analyzer.analyze(text)
            found = (Counter(analysed), len(analysed))
            if len(self._analysed) >= 20_000:
                self._analysed.clear()
            self._analysed[text] = found
        return found

    def _idf(self, terms: list[str]) -> np.ndarray:
        for term in terms:
            if term not in self._doc_freqs:
                self._doc_freqs[term] = self.view.doc_freq(term)
        return idf(np.array([self._doc_freqs[t] for t in terms], dtype=np.int64), self.doc_count)

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        terms = self.analyzer.analyze(query)  # a repeated query term counts again, as in the bm25 stage
        out = np.zeros(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            counts, length = self._terms(text)
            matched = [t for t in terms if t in counts]
            if matched:
                out[i] = float(posting_scores(self._idf(matched), np.array([counts[t] for t in matched]),
                                              np.full(len(matched), length), self.avg_length,
                                              self.k1, self.b).sum())
        return out


def cosine_scores(model: Any, groups: Groups, batch_size: int = 32) -> list[np.ndarray]:
    """The bi-encoder's cosine of each query with each of its texts; every distinct text encoded once."""
    texts = sorted({t for _, ts in groups for t in ts})
    position = {t: i for i, t in enumerate(texts)}
    documents = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
    queries = model.encode([q for q, _ in groups], batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return [documents[[position[t] for t in ts]] @ queries[i] for i, (_, ts) in enumerate(groups)]


def hybrid_labeller(index: Index, model: Any) -> Labeller:
    lexical = LexicalScorer(index)

    def label(groups: Groups, advance: Callable[[int], None] | None = None) -> list[np.ndarray]:
        out = []
        for start in range(0, len(groups), 64):  # in chunks, so the progress bar moves
            chunk = groups[start:start + 64]
            for (query, texts), cosines in zip(chunk, cosine_scores(model, chunk), strict=True):
                out.append((standardised(lexical.scores(query, texts)) + standardised(cosines)) / 2)
                if advance:
                    advance(len(texts))
        return out

    return label


def teacher_labeller(teacher: Any) -> Labeller:
    def label(groups: Groups, advance: Callable[[int], None] | None = None) -> list[np.ndarray]:
        flat = score_pairs(teacher, [(q, t) for q, ts in groups for t in ts], advance=advance)
        out, position = [], 0
        for _, texts in groups:
            out.append(flat[position:position + len(texts)].astype(np.float64))
            position += len(texts)
        return out

    return label


def make_labeller(labels: str, index: Index, teacher: Any | None, student: Any) -> Labeller:
    """The labeller ``labels`` names; ``student`` is the unadapted bi-encoder (the hybrid's dense half)."""
    check_labels(labels)
    if labels == "hybrid":
        return hybrid_labeller(index, student)
    if labels == "auto":
        raise RankstackError("labels 'auto' must be resolved first (choose_labels)")
    assert teacher is not None
    return teacher_labeller(teacher)
