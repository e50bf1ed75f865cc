from __future__ import annotations

import pytest

from rankstack.text import LUCENE_ENGLISH_STOP_WORDS, LuceneEnglishAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> LuceneEnglishAnalyzer:
    return LuceneEnglishAnalyzer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The runner's shoes", ["runner", "shoe"]),             # possessive, stop word, plural
        ("running generalization", ["run", "gener"]),            # original Porter steps 1-4
        ("e.g. U.S.A.", ["e.g", "u.s.a"]),                      # letters joined across a dot
        ("3.14 and 1,000,000", ["3.14", "1,000,000"]),           # numbers keep their separators
        ("don't stop", ["don't", "stop"]),                      # apostrophe inside a word stays
        ("state-of-the-art", ["state", "art"]),                 # hyphen splits; 'of'/'the' are stop words
        ("km/h", ["km", "h"]),
        ("abc123def", ["abc123def"]),                           # letters and digits join
        ("a.1", ["1"]),                                         # letter-dot-digit splits; 'a' is a stop word
        ("", []),
        ("the of and", []),
    ],
)
def test_lucene_english_analysis(analyzer: LuceneEnglishAnalyzer, text: str, expected: list[str]) -> None:
    assert analyzer.analyze(text) == expected


def test_stop_words_are_lucenes_33(analyzer: LuceneEnglishAnalyzer) -> None:
    assert len(LUCENE_ENGLISH_STOP_WORDS) == 33
    assert "not" in LUCENE_ENGLISH_STOP_WORDS and "he" not in LUCENE_ENGLISH_STOP_WORDS


def test_stop_words_removed_after_lowercasing(analyzer: LuceneEnglishAnalyzer) -> None:
    assert analyzer.analyze("THE Cat") == ["cat"]


def test_ideographs_are_single_tokens(analyzer: LuceneEnglishAnalyzer) -> None:
    assert analyzer.analyze("中文") == ["中", "文"]


def test_over_long_token_is_split_not_dropped(analyzer: LuceneEnglishAnalyzer) -> None:
    terms = analyzer.tokenize("x" * 600)
    assert [len(t) for t in terms] == [255, 255, 90]


def test_no_stemming_option() -> None:
    assert LuceneEnglishAnalyzer(stem=False).analyze("running dogs") == ["running", "dogs"]
