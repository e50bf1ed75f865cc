"""Lucene's ``StandardTokenizer`` (UAX#29 word boundaries) as one ``re`` pattern.

The grammar is Lucene's ``StandardTokenizerImpl.jflex``; its character classes come from Unicode's
word-break properties (generated into ``_uax29_tables``). A token is:

- a word: letters and digits joined (WB5, WB8-WB10), a single MidLetter between two letters ("e.g",
  "don't"), a single MidNum between two digits ("3.14", "1,000"), ExtendNumLet ("_") joining anything
  (WB13a/b) but never a token on its own, Katakana runs (WB13), Hebrew letters with their quotes (WB7a-c);
- an emoji sequence (© and ® included: they are Extended_Pictographic);
- a run of South-East Asian script (Line_Break=Complex_Context), kept whole as ICU does;
- a single Han or Hiragana character.

Combining marks, format characters and ZWJ (WB4) stay with the character before them, so a soft hyphen
does not split a word. Everything else separates tokens and is dropped. JFlex takes the longest match;
the alternatives below are ordered and greedy so that the first match is the longest one.
Python's ``re`` tests a class of BMP characters through a bitmap but scans one holding astral characters
range by range, so text without astral characters (nearly all) takes a pattern without them, and ASCII
text a hand-reduced pattern of its own.
"""

from __future__ import annotations

import re
from functools import cache

from rankstack.text import _uax29_tables as t


@cache  # compiling the Unicode classes takes about a second: only when non-ASCII text first comes
def _pattern(astral: bool) -> re.Pattern[str]:
    """The tokenizer's pattern; ``astral=False`` leaves out characters beyond the BMP (faster)."""

    def cls(*names: str) -> str:
        """One character of the union of the named classes."""
        bmp = "".join(getattr(t, name) for name in names)
        beyond = "".join(getattr(t, f"{name}_ASTRAL") for name in names) if astral else ""
        parts = [f"[{body}]" for body in (bmp, beyond) if body]
        if not parts:
            return "(?!)"  # a class with no character in this pattern's range never matches
        return parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"

    def after(name: str) -> str:
        """A fixed-width look-behind for a ``name`` character, with at most one extender after it."""
        return rf"(?:(?<={cls(name)})|(?<={cls(name)}{cls('EXTEND')}))"

    x = f"{cls('EXTEND')}*"
    # Letters and digits join directly; a middle character joins only between the right kinds.
    run = rf"{cls('LETTER', 'NUMERIC')}{cls('LETTER', 'NUMERIC', 'EXTEND')}*"
    mid = (rf"{after('LETTER')}{cls('MID_LETTER')}{x}(?={cls('LETTER')})"
           rf"|{after('NUMERIC')}{cls('MID_NUMERIC')}{x}(?={cls('NUMERIC')})"
           rf"|{after('HEBREW_LETTER')}{cls('DOUBLE_QUOTE')}{x}(?={cls('HEBREW_LETTER')})")
    hebrew_quote = rf"{after('HEBREW_LETTER')}{cls('SINGLE_QUOTE')}{x}"  # WB7a: Hebrew_Letter x Single_Quote
    katakana = rf"{cls('KATAKANA')}{cls('KATAKANA', 'EXTEND')}*"
    core = rf"(?:{run}(?:(?:{mid}){run}|{hebrew_quote}(?:{run})?)*|{katakana})"
    connectors = rf"{cls('EXTEND_NUM_LET')}{cls('EXTEND_NUM_LET', 'EXTEND')}*"
    word = rf"(?:{connectors})?{core}(?:{connectors}(?:{core})?)*"

    xs = f"{cls('EXTEND_SANS_PRESENTATION')}*"
    element = (rf"(?:\u200d*{cls('EMOJI')}{xs}\ufe0f?"
               rf"|(?:\u200d*{cls('EMOJI_MODIFIER_BASE')}{xs})?{cls('EMOJI_MODIFIER')}{xs})")
    tags = r"[\U000e0020-\U000e007e]+\U000e007f|" if astral else ""
    regional = cls("REGIONAL_INDICATOR")
    emoji = (rf"{element}(?:{tags}(?:\u200d{element})*)"
             rf"|[0-9#*]{xs}\ufe0f?\u20e3{xs}"
             rf"|{regional}{x}{regional}{x}")
    return re.compile(
        rf"{word}|{emoji}"
        rf"|{cls('COMPLEX_CONTEXT')}{cls('COMPLEX_CONTEXT', 'EXTEND')}*"
        rf"|{cls('HAN')}{x}|{cls('HIRAGANA')}{x}"
    )


# The same grammar over ASCII alone, where it reduces to: letters, digits and "_" join; ' . : join two
# letters; ' , . ; join two digits; "_" alone is no token. Three times faster than the general pattern
# on queries; tests/unit/test_analyzer.py checks it against the general patterns on random ASCII text.
_ASCII_PATTERN = re.compile(r"_*[^\W_]\w*(?:(?:(?<=[a-zA-Z])['.:](?=[a-zA-Z])|(?<=\d)[',.;](?=\d))\w+)*", re.ASCII)
MAX_TOKEN_LENGTH = 255  # StandardTokenizer's default maxTokenLength


def standard_tokens(text: str) -> list[str]:
    """The tokens Lucene's StandardTokenizer emits for ``text``, in order."""
    if text.isascii():
        pattern = _ASCII_PATTERN
    else:
        pattern = _pattern(astral=max(text) > "\uffff")
    tokens = pattern.findall(text)
    if tokens and max(map(len, tokens)) > MAX_TOKEN_LENGTH:
        # Lucene splits an over-long token at maxTokenLength rather than dropping it.
        tokens = [tok[i:i + MAX_TOKEN_LENGTH] for tok in tokens for i in range(0, len(tok), MAX_TOKEN_LENGTH)]
    return tokens
