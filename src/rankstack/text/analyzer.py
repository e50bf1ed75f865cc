"""A Python reproduction of Lucene's English analyzer as Pyserini/Anserini configure it.

Anserini's ``DefaultEnglishAnalyzer``: StandardTokenizer (Unicode UAX#29 word boundaries)
-> EnglishPossessiveFilter -> LowerCaseFilter -> StopFilter (Lucene's 33 English stop words)
-> PorterStemFilter. Matching each step keeps our BM25 scores equal to Lucene's.
"""

from __future__ import annotations

import re
from typing import Protocol

import Stemmer  # PyStemmer: Snowball's "porter" is Martin Porter's original algorithm, as in Lucene

# org.apache.lucene.analysis.en.EnglishAnalyzer.ENGLISH_STOP_WORDS_SET
LUCENE_ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

# StandardTokenizer approximated for the scripts our collections use:
# - letters and digits (and "_", UAX#29 ExtendNumLet) form words; letters and digits join (WB9/10);
# - a single MidLetter/MidNumLet char (. : ' ’) between two letters keeps them together (WB6/7): "e.g", "don't";
# - a single MidNum/MidNumLet char (. , ; ' ’) between two digits keeps them together (WB11/12): "3.14", "1,000";
# - each ideograph / kana character is a token of its own, as StandardTokenizer emits them.
_LETTER = r"[^\W\d_]"
_IDEOGRAPHIC = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
_WORD_CHAR = rf"(?:(?!{_IDEOGRAPHIC})\w)"
_TOKEN_PATTERN = re.compile(
    rf"{_IDEOGRAPHIC}"
    rf"|{_WORD_CHAR}+(?:(?:(?<={_LETTER})[.:'\u2019](?={_LETTER})|(?<=\d)[.,;'\u2019](?=\d)){_WORD_CHAR}+)*"
)
_MAX_TOKEN_LENGTH = 255  # StandardTokenizer's default maxTokenLength
_POSSESSIVE_SUFFIXES = ("'s", "\u2019s", "\uff07s")  # matched after lower-casing


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
        self._stemmer = Stemmer.Stemmer("porter") if stem else None

    def tokenize(self, text: str) -> list[str]:
        """StandardTokenizer + EnglishPossessiveFilter + LowerCaseFilter + StopFilter."""
        # Lower-casing before splitting gives the same tokens (the word-break rules ignore case) and
        # lets one C-level call replace a per-token Python call.
        tokens = _TOKEN_PATTERN.findall(text.lower())
        if tokens and max(map(len, tokens)) > _MAX_TOKEN_LENGTH:
            # Lucene splits over-long tokens at maxTokenLength rather than dropping them.
            tokens = [t[i:i + _MAX_TOKEN_LENGTH] for t in tokens for i in range(0, len(t), _MAX_TOKEN_LENGTH)]
        stop_words = self.stop_words
        return [
            term for term in (t[:-2] if t.endswith(_POSSESSIVE_SUFFIXES) else t for t in tokens)
            if term and term not in stop_words
        ]

    def analyze(self, text: str) -> list[str]:
        terms = self.tokenize(text)
        if self._stemmer is None:
            return terms
        return self._stemmer.stemWords(terms)

    def config(self) -> dict[str, object]:
        return {"name": self.name, "stem": "porter" if self.stem else None,
                "stop_words": sorted(self.stop_words)}
