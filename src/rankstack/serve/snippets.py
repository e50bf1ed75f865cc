"""Snippets with the query's terms highlighted, matched through the index's own analyzer.

A word matches when one of the terms the analyzer makes of it is a query term. Analyzing every word of
every hit on every request cost a service tens of milliseconds per search, so each distinct word is
analyzed once per analyzer and remembered, with, for each term, the words that give it (a bounded table:
a collection's vocabulary, not its text). A document is cut into words in the regular expression engine,
and the offsets of its words are kept for the recently shown documents (bounded by their characters), so
a document shown again is not cut again; set operations pick the words that give a query term. The
window is highlighted from the spans already found, and only the word cut by the window's end is looked
at again, so the output is character for character what analyzing every word afresh gives.
"""

from __future__ import annotations

import html
import re
import sys
import threading
import weakref
from array import array
from bisect import bisect_left
from collections import OrderedDict
from itertools import accumulate

from rankstack.text.analyzer import Analyzer

_WORD = r"\w+(?:[.'\u2019]\w+)*"
_SPLIT = re.compile(f"({_WORD})")  # split() gives separators and words in turn, and so their offsets
MAX_REMEMBERED_WORDS = 200_000  # distinct word forms per analyzer (a few tens of MB at most)
MAX_REMEMBERED_CHARS = 4_000_000  # characters of recently shown texts whose word offsets are kept (~30 MB)


class _Words:
    """A text cut into words: the words in order, where each ends, and the distinct ones."""

    __slots__ = ("_positions", "ends", "generation", "text", "unique", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        parts = _SPLIT.split(text)  # [separator, word, separator, ..., word, separator]
        self.words = list(map(sys.intern, parts[1::2]))  # interned: texts kept share one copy of each word
        self.ends = array("l", accumulate(map(len, parts)))  # word i runs from ends[2i] to ends[2i + 1]
        self.unique = frozenset(self.words)
        self.generation = -1  # the word table's generation that knows every word here
        # Where each word that matched a query so far occurs: a document shown again for a query sharing
        # a term finds the word's places without scanning the text (only matched words: little memory).
        self._positions: dict[str, tuple[int, ...]] = {}

    def _places(self, word: str) -> tuple[int, ...]:
        places = self._positions.get(word)
        if places is None:
            words, found = self.words, []
            position = words.index(word)
            while True:
                found.append(position)
                try:
                    position = words.index(word, position + 1)
                except ValueError:
                    break
            places = self._positions[word] = tuple(found)  # a race only computes the same tuple twice
        return places

    def spans(self, hits: frozenset[str]) -> list[tuple[int, int]]:
        """The spans of the words in ``hits`` (found by identity first: the words are interned)."""
        chosen = sorted(position for word in hits for position in self._places(word))
        ends = self.ends
        return [(ends[2 * i], ends[2 * i + 1]) for i in chosen]


class _WordTable:
    """What ``analyzer`` makes of each word seen so far, for each term the words that give it, and the word
    offsets of recently shown texts (so a document shown again is not cut into words again)."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.terms: dict[str, list[str]] = {}
        self.words_of: dict[str, set[str]] = {}
        self.generation = 0
        self._texts: OrderedDict[tuple[str, bool], _Words] = OrderedDict()
        self._text_chars = 0
        self._lock = threading.Lock()

    def cut(self, text: str, normalize: bool) -> _Words:
        """``text`` (its runs of white space made single spaces when ``normalize``) cut into words, remembered
        for a while."""
        key = (text, normalize)
        with self._lock:
            known = self._texts.get(key)
            if known is not None:
                self._texts.move_to_end(key)
                return known
        words = _Words(" ".join(text.split()) if normalize else text)
        if len(text) <= MAX_REMEMBERED_CHARS // 100:
            with self._lock:
                if key not in self._texts:
                    self._texts[key] = words
                    self._text_chars += len(text)
                while self._text_chars > MAX_REMEMBERED_CHARS:
                    self._text_chars -= len(self._texts.popitem(last=False)[0][0])
        return words

    def matching(self, words: _Words, query_terms: set[str] | frozenset[str]) -> frozenset[str]:
        """Those of the distinct ``words`` that give one of ``query_terms``."""
        with self._lock:
            if words.generation != self.generation:
                self._learn(words.unique)
                words.generation = self.generation
            return words.unique.intersection(set().union(*(self.words_of.get(term, ()) for term in query_terms)))

    def _learn(self, words: frozenset[str]) -> None:
        unseen = words.difference(self.terms)
        if not unseen:
            return
        if len(self.terms) + len(unseen) > MAX_REMEMBERED_WORDS:  # a vocabulary this large: start over
            self.terms, self.words_of = {}, {}
            self.generation += 1
            unseen = words
        for word in unseen:
            terms = self.terms[word] = self.analyzer.analyze(word)
            for term in terms:
                self.words_of.setdefault(term, set()).add(word)


_TABLES: weakref.WeakKeyDictionary[Analyzer, _WordTable] = weakref.WeakKeyDictionary()


def _table(analyzer: Analyzer) -> _WordTable:
    """The word table of ``analyzer`` (a fresh one for analyzers that refuse weak references)."""
    try:
        table = _TABLES.get(analyzer)
        if table is None:
            table = _TABLES[analyzer] = _WordTable(analyzer)
        return table
    except TypeError:
        return _WordTable(analyzer)


def matching_spans(text: str, query_terms: set[str] | frozenset[str], analyzer: Analyzer) -> list[tuple[int, int]]:
    """Character spans of words in ``text`` whose analyzed form is one of the query's terms."""
    if not query_terms:
        return []
    table = _table(analyzer)
    words = table.cut(text, normalize=False)
    return words.spans(table.matching(words, query_terms))


def snippet(text: str, query: str, analyzer: Analyzer, width: int = 240) -> tuple[str, str]:
    """The ``width``-character window with most query-term matches: (plain text, HTML with <mark>)."""
    return snippet_for_terms(text, frozenset(analyzer.analyze(query)), analyzer, width)


def snippet_for_terms(text: str, terms: set[str] | frozenset[str], analyzer: Analyzer, width: int = 240
                      ) -> tuple[str, str]:
    """:func:`snippet` for a query already analyzed into ``terms``."""
    table = _table(analyzer)
    words = table.cut(text, normalize=True)
    text = words.text
    spans = words.spans(table.matching(words, terms)) if terms else []
    start = 0
    if spans and len(text) > width:
        best = _densest(spans, width)
        start = max(0, spans[best][0] - 40)
        while start > 0 and not text[start - 1].isspace():
            start -= 1
    end = min(len(text), start + width)
    window = text[start:end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    if end == len(text):
        inside = [(a - start, b - start) for a, b in spans if a >= start]
    else:  # the words before the window's last space are whole; the rest may be cut, so look at it again
        cut = max(text.rfind(" ", start, end) + 1, start)
        inside = [(a - start, b - start) for a, b in spans if a >= start and b <= cut]
        tail = _Words(text[cut:end])  # not remembered: windows differ from query to query
        inside += [(a + cut - start, b + cut - start) for a, b in tail.spans(table.matching(tail, terms))]
    return prefix + window + suffix, prefix + _marked(window, inside) + suffix


def _densest(spans: list[tuple[int, int]], width: int) -> int:
    """The first span with the most spans starting within ``width`` characters from its own start."""
    starts = [a for a, _ in spans]
    counts = [bisect_left(starts, first + width, i) - i for i, first in enumerate(starts)]
    return counts.index(max(counts))


def highlight(text: str, terms: set[str] | frozenset[str], analyzer: Analyzer) -> str:
    """HTML-escaped ``text`` with matching words wrapped in <mark>."""
    return _marked(text, matching_spans(text, terms, analyzer))


def _marked(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, position = [], 0
    for start, end in spans:
        pieces.append(html.escape(text[position:start]))
        pieces.append(f"<mark>{html.escape(text[start:end])}</mark>")
        position = end
    pieces.append(html.escape(text[position:]))
    return "".join(pieces)
