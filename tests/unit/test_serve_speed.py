"""The service's fast paths give what the slow ones gave: snippets, the JSON of a search, the worker count."""

from __future__ import annotations

import html
import json
import random
import re

import pytest

from rankstack.serve import snippets
from rankstack.serve.service import json_bytes
from rankstack.serve.workers import MAX_AUTO_WORKERS, ServeSettings, resolve_workers
from rankstack.text.analyzer import Analyzer, LuceneEnglishAnalyzer

_WORD = re.compile(r"\w+(?:[.'\u2019]\w+)*")


# --- the snippet routine as it was: every word analyzed afresh (the reference) ----------------------------------
def reference_spans(text: str, query_terms: set[str], analyzer: Analyzer) -> list[tuple[int, int]]:
    spans = []
    for match in _WORD.finditer(text):
        terms = analyzer.analyze(match.group(0))
        if terms and any(t in query_terms for t in terms):
            spans.append(match.span())
    return spans


def reference_highlight(text: str, terms: set[str], analyzer: Analyzer) -> str:
    pieces, position = [], 0
    for start, end in reference_spans(text, terms, analyzer):
        pieces.append(html.escape(text[position:start]))
        pieces.append(f"<mark>{html.escape(text[start:end])}</mark>")
        position = end
    pieces.append(html.escape(text[position:]))
    return "".join(pieces)


def reference_snippet(text: str, query: str, analyzer: Analyzer, width: int = 240) -> tuple[str, str]:
    text = " ".join(text.split())
    terms = set(analyzer.analyze(query))
    spans = reference_spans(text, terms, analyzer)
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
    return prefix + window + suffix, prefix + reference_highlight(window, terms, analyzer) + suffix


DOCUMENTS = [
    "Cats chase mice. A cat's whiskers sense the air; cats sleep 16 hours a day.",
    "The café serves crème brûlée — naïve Ünïcödé words, CAFÉ and Café, über-cats and 猫 (neko), ЁЖ кошки.",
    "Dogs bark.\n\n  Dogs   run;\tdog-walkers walk dogs in e.g. parks at 3.5 km/h, don't they? dogs' bowls, dog’s.",
    " ".join(["filler"] * 80 + ["protein", "folding", "proteins", "fold"] + ["filler"] * 80 + ["protein"]),
    "x" * 300 + " protein " + "y" * 300,
    "",
    "   ",
    "<b>cats</b> & <i>dogs</i> \"quoted\" 'single' cats&dogs",
]
QUERIES = ["cats", "dog walking", "protein folds", "café über", "neko 猫", "e.g parks", "the of and", "",
           "кошки", "bowls don't"]


def random_text(rng: random.Random) -> str:
    vocabulary = ["cell", "cells", "Cellular", "protein", "proteins'", "fold", "e.g.", "3.5", "naïve", "CAFÉ",
                  "café", "dog’s", "dogs", "a.b.c", "x'y", "猫", "кошки", "the", "of", "—", "...", "'", ",", "<&>"]
    separators = [" ", "  ", "\n", "\t", "", ".", "-", "'"]
    return "".join(rng.choice(vocabulary) + rng.choice(separators) for _ in range(rng.randrange(0, 120)))


@pytest.mark.parametrize("width", [10, 60, 240])
def test_snippets_equal_the_reference_on_handwritten_and_random_texts(width: int) -> None:
    analyzer = LuceneEnglishAnalyzer()
    rng = random.Random(7)
    texts = DOCUMENTS + [random_text(rng) for _ in range(50)]
    for text in texts:
        for query in QUERIES + ["cell fold café 猫 dogs"]:
            assert snippets.snippet(text, query, analyzer, width) == reference_snippet(text, query, analyzer, width)
            assert snippets.snippet(text, query, analyzer, width) == reference_snippet(text, query, analyzer, width)
            terms = set(analyzer.analyze(query))
            assert snippets.highlight(text, terms, analyzer) == reference_highlight(text, terms, analyzer)
            # a window cut in the middle of a word: the cut word is judged as the window shows it
            cut = text[: rng.randrange(0, len(text) + 1)]
            assert snippets.snippet(cut, query, analyzer, width) == reference_snippet(cut, query, analyzer, width)


def test_snippets_stay_right_when_the_word_and_text_tables_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snippets, "MAX_REMEMBERED_WORDS", 12)
    monkeypatch.setattr(snippets, "MAX_REMEMBERED_CHARS", 400)
    analyzer = LuceneEnglishAnalyzer()  # a new analyzer: a new table, filled under the small limits
    rng = random.Random(11)
    for _ in range(3):
        for text in DOCUMENTS + [random_text(rng) for _ in range(40)]:
            for query in QUERIES:
                assert snippets.snippet(text, query, analyzer) == reference_snippet(text, query, analyzer)
    table = snippets._table(analyzer)
    assert table.generation > 0  # the word table was started over, and snippets stayed right
    assert table._text_chars <= 400 and len(table.terms) <= 12 + 120


def test_snippets_use_each_analyzers_own_terms() -> None:
    stemmed, unstemmed = LuceneEnglishAnalyzer(), LuceneEnglishAnalyzer(stem=False)
    text = "the cats were running"
    assert snippets.snippet(text, "run", stemmed)[1] == "the cats were <mark>running</mark>"
    assert snippets.snippet(text, "run", unstemmed)[1] == "the cats were running"


def test_search_json_is_compact_utf8_and_keeps_its_shape() -> None:
    body = {"query": "café", "pipeline": "bm25(k1=0.9,b=0.4)", "k": 2, "batch_size": 1, "total_ms": 0.5,
            "timings_ms": {"bm25(k1=0.9,b=0.4)": 0.25},
            "hits": [{"rank": 1, "doc_id": "d/1", "score": 1.5, "title": "Ünï", "title_html": "<mark>Ünï</mark>",
                      "snippet": "a \"quote\" …", "snippet_html": "a &quot;quote&quot; …"}]}
    raw = json_bytes(body)
    assert json.loads(raw) == body and list(json.loads(raw)) == list(body)
    assert "café".encode() in raw and b", " not in raw and b": " not in raw
    assert json.loads(json_bytes({"score": float("nan"), "x": [float("inf")]})) == {"score": None, "x": [None]}


def test_the_search_route_answers_with_the_documented_keys(tiny_index) -> None:  # noqa: ANN001
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from rankstack.serve.app import create_app
    from rankstack.serve.service import SearchService

    with TestClient(create_app(SearchService.open(tiny_index))) as client:
        response = client.post("/v1/search", json={"query": "parrot feathers", "k": 2})
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert list(body) == ["query", "pipeline", "k", "hits", "timings_ms", "total_ms", "batch_size"]
        assert list(body["hits"][0]) == ["rank", "doc_id", "score", "title", "title_html", "snippet", "snippet_html"]
        assert body["hits"][0]["snippet_html"].count("<mark>") >= 1
        assert client.get("/v1/search", params={"q": "parrot feathers", "k": 2}).json()["hits"] == body["hits"]


@pytest.mark.parametrize(("spec", "writes", "cores", "expected"), [
    ("auto", False, 2, 2), ("auto", False, 1, 1), ("auto", False, 64, MAX_AUTO_WORKERS), ("auto", True, 16, 1),
    (" AUTO ", False, 4, 4), ("3", False, 1, 3), ("3", True, 1, 3), ("1", False, 8, 1),
])
def test_worker_count(spec: str, writes: bool, cores: int, expected: int) -> None:
    assert resolve_workers(spec, writes_enabled=writes, cores=cores) == expected


@pytest.mark.parametrize("spec", ["0", "-1", "two", "", "1.5"])
def test_worker_count_refuses_what_is_not_a_count(spec: str) -> None:
    with pytest.raises(ValueError, match="--workers takes 'auto' or a positive whole number"):
        resolve_workers(spec, writes_enabled=False, cores=2)


def test_serve_settings_travel_to_workers_unchanged() -> None:
    settings = ServeSettings("/data/index", ["bm25", "rrf(bm25,dense)"], "key", True, "/data", None)
    assert ServeSettings.from_json(settings.to_json()) == settings
