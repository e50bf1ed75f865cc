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
_POSSESSIVE_SUFFIXES = ("'s", "'S", "\u2019s", "\u2019S", "\uff07s", "\uff07S")


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
        terms: list[str] = []
        stop_words = self.stop_words
        for token in _TOKEN_PATTERN.findall(text):
            if len(token) > _MAX_TOKEN_LENGTH:
                # Lucene splits over-long tokens at maxTokenLength rather than dropping them.
                pieces = [token[i:i + _MAX_TOKEN_LENGTH] for i in range(0, len(token), _MAX_TOKEN_LENGTH)]
            else:
                pieces = [token]
            for piece in pieces:
                if piece.endswith(_POSSESSIVE_SUFFIXES):
                    piece = piece[:-2]
                    if not piece:
                        continue
                piece = piece.lower()
                if piece not in stop_words:
                    terms.append(piece)
        return terms

    def analyze(self, text: str) -> list[str]:
        terms = self.tokenize(text)
        if self._stemmer is None:
            return terms
        return self._stemmer.stemWords(terms)

    def config(self) -> dict[str, object]:
        return {"name": self.name, "stem": "porter" if self.stem else None,
                "stop_words": sorted(self.stop_words)}
