"""Lucene 9's English analyzer, token for token, as Pyserini/Anserini configure it.

StandardTokenizer (Unicode UAX#29 word boundaries, rankstack.text.tokenizer) -> EnglishPossessiveFilter
-> LowerCaseFilter -> StopFilter (Lucene's 33 English stop words) -> PorterStemFilter (Lucene's
PorterStemmer, rankstack.text.porter). Matching each step keeps our BM25 scores equal to Lucene's.
"""

from __future__ import annotations

from typing import Protocol

from rankstack.text.porter import PorterStemmer
from rankstack.text.tokenizer import standard_tokens

# org.apache.lucene.analysis.en.EnglishAnalyzer.ENGLISH_STOP_WORDS_SET
LUCENE_ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
# Bumped whenever the analyzer's output changes: an index records the version it was built with, and
# one built by another version is refused (its terms would not match the queries' terms).
ANALYZER_VERSION = 2
_POSSESSIVE_SUFFIXES = ("'s", "\u2019s", "\uff07s")  # matched after lower-casing
# Lucene lower-cases each character on its own (Java's Character.toLowerCase); Python's str.lower
# differs only where Unicode's full mapping does: dotted capital I (to "i" plus a combining dot) and
# capital sigma (to final sigma at a word's end).
_SIMPLE_LOWER_FIXES = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})


class Analyzer(Protocol):
    """Anything that turns text into index terms."""

    name: str

    def analyze(self, text: str) -> list[str]: ...


class LuceneEnglishAnalyzer:
    """Tokenize, drop possessives, lower-case, remove stop words and Porter-stem, as Lucene does.

    >>> LuceneEnglishAnalyzer().analyze("The runner's shoes were running fast, e.g. at 3.5 km/h")
    ['runner', 'shoe', 'were', 'run', 'fast', 'e.g', '3.5', 'km', 'h']
    """

    name = "lucene-english"

    def __init__(self, stem: bool = True, stop_words: frozenset[str] = LUCENE_ENGLISH_STOP_WORDS) -> None:
        self.stem = stem
        self.stop_words = stop_words
        self._stemmer = PorterStemmer() if stem else None

    def tokenize(self, text: str) -> list[str]:
        """StandardTokenizer + EnglishPossessiveFilter + LowerCaseFilter + StopFilter."""
        # Lower-casing before splitting gives the same tokens (lower-casing keeps every character's
        # word-break class; tests/unit/test_analyzer.py checks it) and makes one C-level call of many.
        if "\u0130" in text or "\u03a3" in text:
            text = text.translate(_SIMPLE_LOWER_FIXES)
        text = text.lower()
        tokens = standard_tokens(text)
        stop_words = self.stop_words
        if "'" in text or "\u2019" in text or "\uff07" in text:  # EnglishPossessiveFilter
            tokens = [t[:-2] if t.endswith(_POSSESSIVE_SUFFIXES) else t for t in tokens]
            return [term for term in tokens if term and term not in stop_words]
        return [term for term in tokens if term not in stop_words]

    def analyze(self, text: str) -> list[str]:
        terms = self.tokenize(text)
        if self._stemmer is None:
            return terms
        return self._stemmer.stem_words(terms)

    def config(self) -> dict[str, object]:
        return {"name": self.name, "version": ANALYZER_VERSION, "stem": "porter" if self.stem else None,
                "stop_words": sorted(self.stop_words)}
