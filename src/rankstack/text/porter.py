"""Lucene's ``PorterStemmer``: Porter's reference implementation, departures included.

Snowball's ``porter`` follows the 1980 paper; Lucene (and so Anserini and Pyserini) stems with the
reference implementation, which differs in three ways that change index terms:

- words of one or two characters are left alone (``us`` stays ``us``, ``vs`` stays ``vs``);
- step 2 has ``bli -> ble`` where the paper has ``abli -> able`` (``possibly`` -> ``possibl``);
- step 2 adds ``logi -> log`` (``technology`` -> ``technolog``).

This is a line-by-line port of that class (steps numbered as Lucene numbers them), memoised per word:
a collection's vocabulary is small next to its token count, so each distinct word is stemmed once.
"""

from __future__ import annotations

_VOWELS = frozenset("aeiou")

# Step 3's suffix table (Lucene's step3, Porter's step 2), keyed by the suffix's last-but-one letter.
_STEP3 = {
    "a": (("ational", "ate"), ("tional", "tion")),
    "c": (("enci", "ence"), ("anci", "ance")),
    "e": (("izer", "ize"),),
    "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
    "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
    "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
    "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
    "g": (("logi", "log"),),
}
# Step 4 (Porter's step 3), keyed by the last letter.
_STEP4 = {
    "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
    "i": (("iciti", "ic"),),
    "l": (("ical", "ic"), ("ful", "")),
    "s": (("ness", ""),),
}
# Step 5 (Porter's step 4), keyed by the last-but-one letter; "ion" needs s or t before it.
_STEP5 = {
    "a": ("al",), "c": ("ance", "ence"), "e": ("er",), "i": ("ic",), "l": ("able", "ible"),
    "n": ("ant", "ement", "ment", "ent"), "o": ("ion", "ou"), "s": ("ism",), "t": ("ate", "iti"),
    "u": ("ous",), "v": ("ive",), "z": ("ize",),
}


class _Word:
    """The stemmer's state for one word: the buffer ``b``, its end ``k`` and the stem end ``j``."""

    __slots__ = ("b", "j", "k")

    def __init__(self, word: str) -> None:
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        ch = self.b[i]
        if ch in _VOWELS:
            return False
        if ch == "y":
            return True if i == 0 else not self.cons(i - 1)
        return True

    def m(self) -> int:
        """The number of consonant-vowel sequences between the word's start and ``j``."""
        n, i, j = 0, 0, self.j
        while True:
            if i > j:
                return n
            if not self.cons(i):
                break
            i += 1
        i += 1
        while True:
            while True:
                if i > j:
                    return n
                if self.cons(i):
                    break
                i += 1
            i += 1
            n += 1
            while True:
                if i > j:
                    return n
                if not self.cons(i):
                    break
                i += 1
            i += 1

    def vowel_in_stem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def double_consonant(self, j: int) -> bool:
        return j >= 1 and self.b[j] == self.b[j - 1] and self.cons(j)

    def cvc(self, i: int) -> bool:
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, suffix: str) -> bool:
        length = len(suffix)
        start = self.k - length + 1
        if start < 0 or "".join(self.b[start:self.k + 1]) != suffix:
            return False
        self.j = self.k - length
        return True

    def set_to(self, replacement: str) -> None:
        start = self.j + 1
        self.b[start:start + len(replacement)] = list(replacement)
        self.k = self.j + len(replacement)
        del self.b[self.k + 1:]

    def replace_if_measured(self, replacement: str) -> None:
        if self.m() > 0:
            self.set_to(replacement)

    def step1(self) -> None:
        """Plurals and -ed / -ing."""
        b = self.b
        if b[self.k] == "s":
            if self.ends("sses"):
                self.k -= 2
            elif self.ends("ies"):
                self.set_to("i")
            elif b[self.k - 1] != "s":
                self.k -= 1
        if self.ends("eed"):
            if self.m() > 0:
                self.k -= 1
        elif (self.ends("ed") or self.ends("ing")) and self.vowel_in_stem():
            self.k = self.j
            if self.ends("at"):
                self.set_to("ate")
            elif self.ends("bl"):
                self.set_to("ble")
            elif self.ends("iz"):
                self.set_to("ize")
            elif self.double_consonant(self.k):
                if self.b[self.k] not in "lsz":
                    self.k -= 1
            elif self.m() == 1 and self.cvc(self.k):
                self.set_to("e")

    def step2(self) -> None:
        """A terminal y becomes i when the stem has another vowel."""
        if self.ends("y") and self.vowel_in_stem():
            self.b[self.k] = "i"

    def step3(self) -> None:
        """Double suffixes to single ones (-ization -> -ize), Lucene's departures included."""
        if self.k == 0:
            return
        for suffix, replacement in _STEP3.get(self.b[self.k - 1], ()):
            if self.ends(suffix):
                self.replace_if_measured(replacement)
                return

    def step4(self) -> None:
        """-ic-, -full, -ness and the like."""
        for suffix, replacement in _STEP4.get(self.b[self.k], ()):
            if self.ends(suffix):
                self.replace_if_measured(replacement)
                return

    def step5(self) -> None:
        """-ant, -ence and the like, in context <c>vcvc<v>."""
        if self.k == 0:
            return
        for suffix in _STEP5.get(self.b[self.k - 1], ()):
            if self.ends(suffix):
                if suffix == "ion" and not (self.j >= 0 and self.b[self.j] in "st"):
                    continue
                if self.m() > 1:
                    self.k = self.j
                return

    def step6(self) -> None:
        """A final -e goes when m() > 1 (or m() == 1 and not cvc); -ll becomes -l when m() > 1."""
        self.j = self.k
        if self.b[self.k] == "e":
            measure = self.m()
            if measure > 1 or (measure == 1 and not self.cvc(self.k - 1)):
                self.k -= 1
        if self.b[self.k] == "l" and self.double_consonant(self.k) and self.m() > 1:
            self.k -= 1

    def result(self) -> str:
        return "".join(self.b[:self.k + 1])


def _utf16_length(word: str) -> int:
    # Lucene measures a word in UTF-16 code units; a character beyond the BMP counts twice.
    return len(word) if word.isascii() else len(word) + sum(1 for c in word if ord(c) > 0xFFFF)


def porter_stem(word: str) -> str:
    """Stem one lower-cased word exactly as Lucene's ``PorterStemFilter`` does."""
    if _utf16_length(word) <= 2:
        return word
    state = _Word(word)
    state.step1()
    state.step2()
    state.step3()
    state.step4()
    state.step5()
    state.step6()
    return state.result()


class PorterStemmer:
    """``porter_stem`` with a per-word memo (bounded: a hostile stream of distinct words cannot grow it)."""

    def __init__(self, max_cached_words: int = 1_000_000) -> None:
        self._memo: dict[str, str] = {}
        self._max_cached_words = max_cached_words

    def stem_words(self, words: list[str]) -> list[str]:
        memo = self._memo
        try:
            return [memo[word] for word in words]
        except KeyError:
            pass
        stems = []
        for word in words:
            stem = memo.get(word)
            if stem is None:
                stem = porter_stem(word)
                if len(memo) >= self._max_cached_words:
                    memo.clear()
                memo[word] = stem
            stems.append(stem)
        return stems
