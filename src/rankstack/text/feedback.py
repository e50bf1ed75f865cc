"""Query expansion from feedback documents, with Anserini's arithmetic (RM3 and Rocchio).

Pure functions over term frequencies: the stages in :mod:`rankstack.stages.prf` read the feedback
documents' terms from the index and search with the weights returned here. Everything follows
Anserini 0.21 (``Rm3Reranker``, ``RocchioReranker``, ``FeatureVector``), which Pyserini runs:

* weights are float32 and accumulate in float32 in the same order; norms are summed in float64;
* ranking a vector orders terms by weight, descending, then by the term (Java's ``String`` order);
* a feedback term has 2 to 20 characters and occurs in at most 10% of the documents; RM3 also keeps only
  ``[a-z0-9]+`` terms (Pyserini's ``filter_terms=True``).

The order of terms matters only where weights tie, which happens often (terms seen once in one feedback
document), so it is reproduced rather than left to a hash table.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

f32 = np.float32
_ENGLISH_TERM = re.compile(r"[a-z0-9]+")
_MAX_DF_RATIO = f32(0.1)  # Anserini's document-frequency cut for non-tweet collections
_MIN_NORM = f32(0.001)  # feedback documents with a smaller norm are skipped (Anserini: avoids 0/0)

# A feedback document: its term frequencies, and its score in the ranking that selected it.
FeedbackDoc = tuple[Mapping[str, int], float]


def java_order(term: str) -> bytes:
    """Sort key equal to Java's ``String.compareTo`` (UTF-16 code units, not code points)."""
    return term.encode("utf-16-be")


def ranked_terms(features: Mapping[str, float | np.float32]) -> list[tuple[str, float | np.float32]]:
    """Anserini's ``getOrderedFeatures``: weight descending, ties by the term."""
    if all(term.isascii() for term in features):  # the common case: Python's order is Java's there
        return sorted(features.items(), key=lambda item: (-item[1], item[0]))
    return sorted(features.items(), key=lambda item: (-item[1], java_order(item[0])))


def prune(features: Mapping[str, float | np.float32], size: int) -> dict[str, float | np.float32]:
    return dict(ranked_terms(features)[:size])


def _java_length(term: str) -> int:
    return len(term.encode("utf-16-le")) // 2


def _l1_normalised(features: Mapping[str, float | np.float32]) -> dict[str, np.float32]:
    norm = math.fsum(abs(float(value)) for value in features.values())
    return {term: f32(float(value) / norm) for term, value in features.items()} if norm else \
        {term: f32(value) for term, value in features.items()}


def _l2_normalised(features: Mapping[str, float | np.float32]) -> dict[str, np.float32]:
    norm = math.sqrt(math.fsum(float(value) ** 2 for value in features.values()))
    return {term: f32(float(value) / norm) for term, value in features.items()} if norm else \
        {term: f32(value) for term, value in features.items()}


def _aligned(vocabulary: dict[str, int], vector: Mapping[str, np.float32]) -> np.ndarray:
    """A document's weights as a float32 array over ``vocabulary`` (zeros where it lacks a term)."""
    values = np.zeros(len(vocabulary), dtype=np.float32)
    values[[vocabulary[term] for term in vector]] = list(vector.values())
    return values


def query_vector(query_terms: Sequence[str]) -> dict[str, np.float32]:
    """``FeatureVector.fromTerms``: each analysed query term weighs its count."""
    return {term: f32(count) for term, count in Counter(query_terms).items()}


class TermFilter:
    """Which terms of a feedback document may expand a query (Anserini's ``createdFeatureVector``).

    Decisions are remembered per term: one filter serves a batch of queries, whose feedback documents
    share most of their terms.
    """

    def __init__(self, doc_freq: Callable[[str], int], num_docs: int, english_only: bool) -> None:
        self._doc_freq = doc_freq
        self._max_doc_freq = _max_doc_freq(max(num_docs, 1))
        self._english_only = english_only
        self._decided: dict[str, bool] = {}

    def __call__(self, term: str) -> bool:
        decided = self._decided.get(term)
        if decided is None:
            decided = self._decided[term] = (
                2 <= _java_length(term) <= 20
                and not (self._english_only and not _ENGLISH_TERM.fullmatch(term))
                and self._doc_freq(term) <= self._max_doc_freq)
        return decided


def _max_doc_freq(num_docs: int) -> int:
    """The largest document frequency Anserini keeps: ``(float) df / numDocs <= 0.1f`` in float32."""
    candidate = int(num_docs * 0.1) + 2
    while candidate > 0 and f32(candidate) / f32(num_docs) > _MAX_DF_RATIO:
        candidate -= 1
    return candidate


def _document_vector(term_freqs: Mapping[str, int], keep: TermFilter, size: int | None = None
                     ) -> dict[str, np.float32]:
    """The kept terms of a document with their frequencies as weights, the ``size`` heaviest when given."""
    kept = {term: tf for term, tf in term_freqs.items() if keep(term)}
    if size is not None:
        kept = prune(kept, size)  # type: ignore[assignment]
    return {term: f32(tf) for term, tf in kept.items()}


def rm3_weights(query_terms: Sequence[str], feedback: Sequence[FeedbackDoc], keep: TermFilter,
                fb_terms: int, original_weight: float) -> dict[str, float]:
    """The expanded query of RM3: the original query's terms (L1-normalised) interpolated with the
    relevance model of the feedback documents (each document's ``fb_terms`` most frequent terms,
    weighted by the document's score)."""
    documents = [(_document_vector(tf, keep, fb_terms), f32(score)) for tf, score in feedback]
    norms = [f32(math.fsum(float(v) for v in vector.values())) for vector, _ in documents]
    # Per term, float32 sums over the documents in their order, as Anserini's loop; vectorised over terms.
    vocabulary = {term: column for column, term in enumerate({t for vector, _ in documents for t in vector})}
    weights: np.ndarray = np.zeros(len(vocabulary), dtype=np.float32)
    for (vector, score), norm in zip(documents, norms, strict=True):
        if norm > _MIN_NORM:
            weights = weights + (_aligned(vocabulary, vector) / norm) * score
    model = dict(zip(vocabulary, weights.tolist(), strict=True))
    relevance = _l1_normalised(prune(model, fb_terms))
    original = _l1_normalised(query_vector(query_terms))
    x_weight = f32(original_weight)
    return {term: float(f32(float(f32(x_weight * original.get(term, f32(0.0))))
                            + (1.0 - float(x_weight)) * float(relevance.get(term, f32(0.0)))))
            for term in original.keys() | relevance.keys()}


def rocchio_weights(query_terms: Sequence[str], feedback: Sequence[Mapping[str, int]], keep: TermFilter,
                    fb_terms: int, alpha: float, beta: float) -> dict[str, float]:
    """The expanded query of Rocchio: ``alpha`` times the L2-normalised query plus ``beta`` times the mean
    of the L2-normalised feedback documents (its ``fb_terms`` heaviest terms, L2-normalised again)."""
    documents = [_document_vector(tf, keep) for tf in feedback]
    norms = [f32(math.sqrt(math.fsum(float(v) ** 2 for v in vector.values()))) for vector in documents]
    vocabulary = {term: column for column, term in enumerate({t for vector in documents for t in vector})}
    sums: np.ndarray = np.zeros(len(vocabulary), dtype=np.float32)
    for vector, norm in zip(documents, norms, strict=True):
        if norm > _MIN_NORM:
            sums = sums + _aligned(vocabulary, vector) / norm
    mean = dict(zip(vocabulary, (sums / f32(len(documents))).tolist(), strict=True))
    relevant = _l2_normalised(prune(mean, fb_terms))
    original = _l2_normalised(query_vector(query_terms))
    a, b = f32(alpha), f32(beta)
    weights = {term: f32(f32(a * original.get(term, f32(0.0))) + f32(b * relevant.get(term, f32(0.0))))
               for term in original.keys() | relevant.keys()}
    return {term: float(weight) for term, weight in weights.items() if weight > 0}
