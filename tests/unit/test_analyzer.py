"""The analyzer against Lucene 9's EnglishAnalyzer, one class of behaviour at a time.

Every expected value below is Lucene's output for the same text (each class was found by comparing
token sequences over the collections in ../shared/data; tests/regression/test_lucene_tokens.py checks
all 13,373 documents).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankstack.text import LUCENE_ENGLISH_STOP_WORDS, LuceneEnglishAnalyzer
from rankstack.text import _uax29_tables as tables
from rankstack.text.porter import PorterStemmer, porter_stem
from rankstack.text.tokenizer import _ASCII_PATTERN, _pattern, standard_tokens


@pytest.fixture(scope="module")
def analyzer() -> LuceneEnglishAnalyzer:
    return LuceneEnglishAnalyzer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The runner's shoes", ["runner", "shoe"]),             # possessive, stop word, plural
        ("running generalization", ["run", "gener"]),            # Porter steps 1-5
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


# Porter's reference implementation, as Lucene's PorterStemmer keeps it (the published algorithm,
# Snowball's "porter", gives the value in the comment).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("technology methodology psychology terminology", ["technolog", "methodolog", "psycholog", "terminolog"]),
        ("assembly possibly terribly", ["assembl", "possibl", "terribl"]),            # ...li: assembli
        ("irreversibly accessibly", ["irrevers", "access"]),                          # irreversibli
        ("us vs es ms os ds", ["us", "vs", "es", "ms", "os", "ds"]),                  # u v e m o d
        ("77.9% vs 55.2%", ["77.9", "vs", "55.2"]),
    ],
)
def test_porter_departures_of_the_reference_implementation(analyzer: LuceneEnglishAnalyzer, text: str,
                                                           expected: list[str]) -> None:
    assert analyzer.analyze(text) == expected


@pytest.mark.parametrize(
    ("word", "stem"),
    [("caresses", "caress"), ("ponies", "poni"), ("ties", "ti"), ("cats", "cat"), ("feed", "feed"),
     ("agreed", "agre"), ("disabled", "disabl"), ("matting", "mat"), ("mating", "mate"), ("meeting", "meet"),
     ("milling", "mill"), ("messing", "mess"), ("happy", "happi"), ("relational", "relat"),
     ("conditional", "condit"), ("rational", "ration"), ("valenci", "valenc"), ("digitizer", "digit"),
     ("callousness", "callous"), ("triplicate", "triplic"), ("formative", "form"), ("electrical", "electr"),
     ("hopefulness", "hope"), ("adjustment", "adjust"), ("adoption", "adopt"), ("controlling", "control"),
     ("rolling", "roll"), ("ion", "ion"), ("aed", "a"), ("s", "s"), ("is", "is"), ("sky", "sky")],
)
def test_porter_stems_single_words(word: str, stem: str) -> None:
    assert porter_stem(word) == stem


def test_possessive_after_a_number_leaves_an_s_not_an_empty_term(analyzer: LuceneEnglishAnalyzer) -> None:
    # "1960's": the quote joins neither digits to letters, so "s" is a token of its own; stemming a
    # one-letter word must leave it alone (Snowball's porter makes it the empty string).
    assert analyzer.analyze("the 1960's") == ["1960", "s"]
    assert analyzer.analyze("Oct4's critical") == ["oct4", "s", "critic"]
    assert analyzer.analyze("CD33\u2019s immunoreceptor") == ["cd33", "s", "immunoreceptor"]
    assert "" not in analyzer.analyze("it's 5's and x's 'quoted' ''s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ACG\u00ae System", ["acg", "\u00ae", "system"]),        # ® and © are emoji (Extended_Pictographic)
        ("\u00a92016 AACR.This", ["\u00a9", "2016", "aacr.thi"]),
        ("a _ b _____ c", ["b", "c"]),                          # underscores alone are no token
        ("online_services/metaadedb", ["online_servic", "metaadedb"]),  # ... but join words
        ("people/km\u00b2 prone", ["peopl", "km", "prone"]),     # a superscript two is no digit
        ("development (R&D) activities", ["develop", "r", "d", "activ"]),
        ("z\u00e3\u00bcrcher", ["z\u00e3", "rcher"]),                # mojibake: ¼ is no letter or digit
        ("\u00e0\u00b8\u00aa", ["\u00e0", "\u00aa"]),                # ¸ (cedilla) splits, as in Unicode 9
        ("shrink\u00ading", ["shrink\u00ad"]),                    # a soft hyphen (Format) joins; -ing goes
    ],
)
def test_tokenizer_character_classes(analyzer: LuceneEnglishAnalyzer, text: str, expected: list[str]) -> None:
    assert analyzer.analyze(text) == expected


def test_stop_words_are_lucenes_33(analyzer: LuceneEnglishAnalyzer) -> None:
    assert len(LUCENE_ENGLISH_STOP_WORDS) == 33
    assert "not" in LUCENE_ENGLISH_STOP_WORDS and "he" not in LUCENE_ENGLISH_STOP_WORDS


def test_stop_words_removed_after_lowercasing(analyzer: LuceneEnglishAnalyzer) -> None:
    assert analyzer.analyze("THE Cat") == ["cat"]


def test_lowercasing_is_per_character_as_in_java(analyzer: LuceneEnglishAnalyzer) -> None:
    # Java's Character.toLowerCase: no final sigma, dotted capital I becomes a plain i.
    assert analyzer.tokenize("\u0391\u03a3 \u0130stanbul") == ["\u03b1\u03c3", "istanbul"]


def test_lowercasing_first_keeps_every_characters_class() -> None:
    # tokenize() lower-cases the whole text before splitting it; that is only sound because no
    # character changes word-break class when lower-cased (letters that are also emoji stay letters).
    names = [n for n in dir(tables) if n.isupper() and not n.endswith("_ASTRAL")]
    classes = {n: re.compile(f"[{getattr(tables, n)}{getattr(tables, n + '_ASTRAL')}]") for n in names}
    letter = classes["LETTER"]
    changed = []
    for codepoint in range(0x110000):
        char = chr(codepoint)
        lower = char.lower()
        if lower == char or 0xD800 <= codepoint <= 0xDFFF:
            continue
        for name, pattern in classes.items():
            if bool(pattern.match(char)) != bool(pattern.match(lower[0])):
                if not (name == "EMOJI" and letter.match(char) and letter.match(lower[0])):
                    changed.append((hex(codepoint), name))
    assert changed == []


def test_ideographs_are_single_tokens(analyzer: LuceneEnglishAnalyzer) -> None:
    assert analyzer.analyze("中文") == ["中", "文"]


def test_characters_beyond_the_bmp_take_the_full_pattern() -> None:
    # Mathematical bold letters are letters (astral); an emoji modifier sequence stays one token.
    assert standard_tokens("\U0001d400\U0001d401 x") == ["\U0001d400\U0001d401", "x"]
    assert standard_tokens("ok \U0001f44d\U0001f3fd") == ["ok", "\U0001f44d\U0001f3fd"]


def test_over_long_token_is_split_not_dropped(analyzer: LuceneEnglishAnalyzer) -> None:
    terms = analyzer.tokenize("x" * 600)
    assert [len(t) for t in terms] == [255, 255, 90]


def test_no_stemming_option() -> None:
    assert LuceneEnglishAnalyzer(stem=False).analyze("running dogs") == ["running", "dogs"]


def test_stem_memo_is_bounded() -> None:
    stemmer = PorterStemmer(max_cached_words=10)
    words = [f"running{i}s" for i in range(25)]
    assert stemmer.stem_words(words) == [porter_stem(w) for w in words]
    assert len(stemmer._memo) <= 10


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab1_ .,;:'\"-Z9\n", max_size=16))
def test_ascii_fast_path_is_the_general_grammar(text: str) -> None:
    general = _pattern(astral=False).findall(text)
    assert _ASCII_PATTERN.findall(text) == general == _pattern(astral=True).findall(text)
