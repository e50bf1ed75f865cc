"""Snippets with the query's terms highlighted, matched through the index's own analyzer."""

from __future__ import annotations

import html
import re

from rankstack.text.analyzer import Analyzer

_WORD = re.compile(r"\w+(?:[.'\u2019]\w+)*")


def matching_spans(text: str, query_terms: set[str], analyzer: Analyzer) -> list[tuple[int, int]]:
    """Character spans of words in ``text`` whose analyzed form is one of the query's terms."""
    spans = []
    for match in _WORD.finditer(text):
        terms = analyzer.analyze(match.group(0))
        if terms and any(t in query_terms for t in terms):
            spans.append(match.span())
    return spans


def snippet(text: str, query: str, analyzer: Analyzer, width: int = 240) -> tuple[str, str]:
    """The ``width``-character window with most query-term matches: (plain text, HTML with <mark>)."""
    text = " ".join(text.split())
    terms = set(analyzer.analyze(query))
    spans = matching_spans(text, terms, analyzer)
    start = 0
    if spans and len(text) > width:
        best = max(range(len(spans)), key=lambda i: sum(1 for s in spans[i:] if s[0] < spans[i][0] + width))
        start = max(0, spans[best][0] - 40)
        while start > 0 and not text[start - 1].isspace():
            start -= 1
    end = min(len(text), start + width)
    window = text[start:end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    marked = highlight(window, terms, analyzer)
    return prefix + window + suffix, prefix + marked + suffix


def highlight(text: str, terms: set[str], analyzer: Analyzer) -> str:
    """HTML-escaped ``text`` with matching words wrapped in <mark>."""
    pieces, position = [], 0
    for start, end in matching_spans(text, terms, analyzer):
        pieces.append(html.escape(text[position:start]))
        pieces.append(f"<mark>{html.escape(text[start:end])}</mark>")
        position = end
    pieces.append(html.escape(text[position:]))
    return "".join(pieces)
