"""Parsing pipeline strings such as ``bm25(k1=0.9,b=0.4)%100>>cross_encoder(model=x)``.

Grammar::

    pipeline := term (">>" term)*
    term     := atom ("%" INT)*
    atom     := NAME ["(" [arg ("," arg)*] ")"] | "(" pipeline ")"
    arg      := NAME "=" value | pipeline        (positional args are sub-pipelines, e.g. for fusion)
    value    := 'quoted' | "quoted" | bare-word
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rankstack.errors import PipelineError
from rankstack.stages.base import Pipeline
from rankstack.stages.registry import stage_factory

_TOKEN = re.compile(r"\s*(?:(>>)|([%(),=])|'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|([^\s%(),=>'\"]+))")
MAX_PIPELINE_LENGTH = 2000
MAX_NESTING = 32  # parentheses and stage arguments, deep enough for any real pipeline


@dataclass
class _Token:
    kind: str  # "op", "str", "word", "end"
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise PipelineError(_where(text, position, f"unexpected character {text[position]!r}"))
        column = match.start() + (len(match.group(0)) - len(match.group(0).lstrip()))
        arrow, op, single, double, word = match.groups()
        if arrow or op:
            tokens.append(_Token("op", arrow or op, column))
        elif single is not None or double is not None:
            raw = single if single is not None else double
            tokens.append(_Token("str", re.sub(r"\\(.)", r"\1", raw), column))
        else:
            tokens.append(_Token("word", word, column))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _where(text: str, column: int, message: str) -> str:
    return f"{message} at column {column + 1} of pipeline '{text}'\n  {text}\n  {' ' * column}^"


class _Parser:
    def __init__(self, text: str, index: Any) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0
        self.index = index
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            shown = token.text or "end of text"
            raise PipelineError(_where(self.text, token.column, f"expected '{op}' but found '{shown}'"))

    def fail(self, token: _Token, message: str) -> PipelineError:
        return PipelineError(_where(self.text, token.column, message))

    def pipeline(self) -> Pipeline:
        # Each nested pipeline (in parentheses or as a stage's argument) recurses once; a bound turns a
        # hostile "((((..." into a clear error instead of Python's RecursionError.
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(self.peek(), f"pipeline nested more than {MAX_NESTING} levels deep")
        try:
            return self._pipeline()
        finally:
            self.depth -= 1

    def _pipeline(self) -> Pipeline:
        result = self.term()
        while self.peek().kind == "op" and self.peek().text == ">>":
            self.take()
            result = result >> self.term()
        return result

    def term(self) -> Pipeline:
        result = self.atom()
        while self.peek().kind == "op" and self.peek().text == "%":
            self.take()
            token = self.take()
            if token.kind != "word" or not token.text.isdigit() or int(token.text) < 1:
                raise self.fail(token, f"'%' must be followed by a positive whole number, found '{token.text}'")
            result = result % int(token.text)
        return result

    def atom(self) -> Pipeline:
        token = self.take()
        if token.kind == "op" and token.text == "(":
            inner = self.pipeline()
            self.expect(")")
            return inner
        if token.kind != "word" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token.text):
            raise self.fail(token, f"expected a stage name, found '{token.text or 'end of text'}'")
        positional: list[Pipeline] = []
        keywords: dict[str, str] = {}
        if self.peek().kind == "op" and self.peek().text == "(":
            self.take()
            if not (self.peek().kind == "op" and self.peek().text == ")"):
                self.arguments(positional, keywords)
            self.expect(")")
        factory = stage_factory(token.text)
        try:
            stage = factory(self.index, *positional, **keywords)
        except TypeError as error:
            raise self.fail(token, f"{token.text}: {error}") from None
        pipeline: Pipeline = stage.pipeline()
        return pipeline

    def arguments(self, positional: list[Pipeline], keywords: dict[str, str]) -> None:
        while True:
            token = self.peek()
            following = self.tokens[min(self.position + 1, len(self.tokens) - 1)]
            if token.kind == "word" and following.kind == "op" and following.text == "=":
                self.take()
                self.take()
                value = self.take()
                if value.kind not in ("word", "str"):
                    raise self.fail(value, f"expected a value for '{token.text}'")
                if token.text in keywords:
                    raise self.fail(token, f"parameter '{token.text}' given twice")
                keywords[token.text] = value.text
            else:
                if keywords:
                    raise self.fail(token, "positional arguments must come before keyword arguments")
                positional.append(self.pipeline())
            if self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                continue
            return


def parse_pipeline(text: str, index: Any = None) -> Pipeline:
    """Build a pipeline from its string form, binding each stage to ``index``.

    >>> str(parse_pipeline("bm25 % 100"))
    'bm25(k1=0.9,b=0.4)%100'
    """
    if not isinstance(text, str) or not text.strip():
        raise PipelineError("empty pipeline; try 'bm25' or 'bm25%100'")
    if len(text) > MAX_PIPELINE_LENGTH:
        raise PipelineError(f"pipeline string longer than {MAX_PIPELINE_LENGTH} characters")
    parser = _Parser(text, index)
    result = parser.pipeline()
    token = parser.peek()
    if token.kind != "end":
        raise parser.fail(token, f"unexpected '{token.text}'")
    result.check()
    return result
