"""The stage contract and its operators: ``stage >> stage`` chains, ``stage % k`` cuts to the top k.

A stage takes queries (and, for rerankers, the run of the previous stage) and returns a Run. A
pipeline is a flat list of stages; its canonical string round-trips through :func:`parse_pipeline`.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from rankstack.errors import PipelineError
from rankstack.types import Hits, Query, Run


@dataclass(frozen=True)
class SearchContext:
    """Settings that apply to a whole pipeline run rather than to one stage.

    ``top_k`` is set by the pipeline when the next step is a cut-off, so a retriever fetches only
    what survives it; ``ignore_identical_ids`` drops hits whose doc id equals the query id (BEIR).
    """

    top_k: int | None = None
    ignore_identical_ids: bool = False
    # Texts of candidates that are not documents of the index (passages of a document, for instance):
    # rerankers score these texts instead of looking the ids up.
    texts: Mapping[str, str] | None = None


DEFAULT_RETRIEVAL_DEPTH = 1000  # hits a retriever returns when no cut-off follows it (as PyTerrier)
# progress(description, total) -> advance(n): how stages ask the caller for a progress bar
ProgressFactory = Callable[[str, int], Callable[[int], None]]


class Stage(ABC):
    """Base of every stage. Subclasses set ``name``, implement ``transform`` and ``params``."""

    name: ClassVar[str] = ""
    # Feedback stages rewrite queries for the retriever after them: ``expands`` names the kind of rewrite
    # ("terms" or "vector"), ``reads_expansion`` the kind a retriever searches with.
    expands: ClassVar[str | None] = None
    reads_expansion: ClassVar[str | None] = None

    @abstractmethod
    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        """Return a run for ``queries``; rerankers score the docs of ``candidates``."""

    # Parameters always written in the canonical string; the others only when they differ from
    # ``defaults()``. ``None`` means all of them (bm25 shows k1 and b, as Pyserini users expect).
    always_shown: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def declared_parameters(cls) -> dict[str, Any]:
        """The keyword parameters and their defaults, read from ``__init__``'s signature.

        The signature is the one place a stage declares its parameters: parsing (types come from the
        defaults), defaults and canonical strings all derive from it, and ``__init__`` validates them.
        A stage keeps each parameter in an attribute of the same name.
        """
        return dict(_declared_parameters(cls))

    def params(self) -> dict[str, Any]:
        """All parameters, in the signature's order."""
        return {name: getattr(self, name) for name, _ in _declared_parameters(type(self))}

    def defaults(self) -> dict[str, Any]:
        return self.declared_parameters()

    def positional(self) -> Sequence[Any]:
        """Sub-pipelines a stage combines (fusion); written before the keyword parameters."""
        return ()

    def stage_label(self) -> str:
        params = self.params()
        if self.always_shown is not None:
            defaults = self.defaults()
            params = {k: v for k, v in params.items()
                      if k in self.always_shown or k not in defaults or defaults[k] != v}
        return format_stage(self.name, params, self.positional())

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        """Build what the stage needs before timing starts (e.g. encode the corpus). Default: nothing."""
        return None

    def candidates_needed(self) -> int | None:
        """How many candidates this stage reads from the one before (None: all it is given)."""
        return None

    def pipeline(self) -> Pipeline:
        return Pipeline([self])

    def __rshift__(self, other: Stage | Pipeline) -> Pipeline:
        return self.pipeline() >> other

    def __mod__(self, top_k: int) -> Pipeline:
        return self.pipeline() % top_k

    def __str__(self) -> str:
        return str(self.pipeline())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


@cache
def _declared_parameters(stage_class: type[Stage]) -> tuple[tuple[str, Any], ...]:
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple((name, parameter.default)
                 for name, parameter in inspect.signature(stage_class.__init__).parameters.items()
                 if parameter.kind in keyword_kinds and parameter.default is not inspect.Parameter.empty)


class Cutoff(Stage):
    """Keep the ``top_k`` best documents of each query."""

    name = "cutoff"

    def __init__(self, top_k: int) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise PipelineError(f"a cut-off needs a positive whole number of documents, got {top_k!r}")
        self.top_k = top_k

    def params(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        if candidates is None:
            raise PipelineError("a cut-off (% k) must follow a stage that produces results")
        return candidates.cut(self.top_k)


class Pipeline:
    """A flat sequence of stages, run left to right."""

    def __init__(self, stages: Sequence[Stage | Pipeline]) -> None:
        flat: list[Stage] = []
        for stage in stages:
            if isinstance(stage, Pipeline):
                flat.extend(stage.stages)
            else:
                flat.append(stage)
        if not flat:
            raise PipelineError("a pipeline needs at least one stage")
        if isinstance(flat[0], Cutoff):
            raise PipelineError("a pipeline cannot start with a cut-off")
        self.stages: list[Stage] = flat

    def check(self) -> None:
        """Refuse a complete pipeline whose stages cannot work in this order (sub-pipelines included).

        Run on a whole pipeline, not at construction: pipelines are built piece by piece (``a >> b``).
        """
        _check_expansions(self.stages)
        for stage in self.stages:
            for part in stage.positional():
                if isinstance(part, Pipeline):
                    part.check()

    def __rshift__(self, other: Stage | Pipeline) -> Pipeline:
        other_stages = other.stages if isinstance(other, Pipeline) else [other]
        return Pipeline([*self.stages, *other_stages])

    def __mod__(self, top_k: int) -> Pipeline:
        return Pipeline([*self.stages, Cutoff(top_k)])

    def __str__(self) -> str:
        text = ""
        for stage in self.stages:
            if isinstance(stage, Cutoff):
                text += f"%{stage.top_k}"
            else:
                text += (">>" if text else "") + stage.stage_label()
        return text

    def __repr__(self) -> str:
        return f"<Pipeline {self}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def pipeline(self) -> Pipeline:
        return self

    def prepare(self, progress: ProgressFactory | None = None) -> None:
        self.check()
        for position, stage in enumerate(self.stages):
            # a stage retrieves when it comes first or right after a feedback stage rewrote the queries
            retrieves = position == 0 or self.stages[position - 1].expands is not None
            stage.prepare(retrieves, progress)

    def transform(self, queries: Sequence[Query], candidates: Run | None = None,
                  context: SearchContext | None = None) -> Run:
        """Run every stage over all queries; ``Run.stage_seconds`` records each stage's wall time."""
        self.check()
        context = context or SearchContext()
        run = candidates
        seconds: dict[str, float] = dict(candidates.stage_seconds) if candidates else {}
        for position, stage in enumerate(self.stages):
            following = self.stages[position + 1] if position + 1 < len(self.stages) else None
            top_k: int | None
            if isinstance(following, Cutoff):
                top_k = following.top_k
            else:
                top_k = (following.candidates_needed() if following else None) or context.top_k
            stage_context = SearchContext(top_k=top_k, ignore_identical_ids=context.ignore_identical_ids,
                                          texts=context.texts)
            started = time.perf_counter()
            run = stage.transform(queries, run, stage_context)
            if not isinstance(stage, Cutoff):
                label = stage.stage_label()
                while label in seconds:  # the same stage twice in one pipeline keeps both timings
                    label += "'"
                seconds[label] = time.perf_counter() - started
        if run is None:  # Pipeline() refuses an empty stage list; this keeps type checkers and -O honest
            raise PipelineError("a pipeline needs at least one stage")
        result = Run(run.results, seconds)
        for query in queries:  # every query appears in the output, even with no hits
            if query.query_id not in result.results:
                result.set(query.query_id, [])
        return result

    def search(self, query: str, query_id: str = "q") -> Hits:
        return self.transform([Query(query_id, query)]).results[query_id]


def _check_expansions(stages: Sequence[Stage]) -> None:
    """A feedback stage needs candidates before it and, right after it, a retriever of its kind."""
    retrievers = {"terms": "bm25", "vector": "dense"}
    for position, stage in enumerate(stages):
        if stage.expands is None:
            continue
        retriever = retrievers[stage.expands]
        example = f"{retriever}>>{stage.name}>>{retriever}"
        if position == 0:
            raise PipelineError(f"{stage.name} expands queries from the documents of a first stage, so it cannot "
                                f"start a pipeline; write e.g. {example}")
        following = stages[position + 1] if position + 1 < len(stages) else None
        if following is None or following.reads_expansion != stage.expands:
            after = "nothing" if following is None else f"'{following.stage_label()}'"
            raise PipelineError(f"{stage.name} rewrites the query for a {retriever} stage right after it, but "
                                f"{after} follows; write e.g. {example}")
        if stage.expands == "vector" and getattr(stage, "model", None) != getattr(following, "model", None):
            raise PipelineError(f"{stage.name} rewrites query vectors of '{getattr(stage, 'model', None)}', but the "
                                f"{retriever} stage after it searches with '{getattr(following, 'model', None)}'; "
                                f"give both the same model=")


def candidate_texts(index: Any, doc_ids: Sequence[str], context: SearchContext) -> list[str]:
    """The text a reranker scores for each candidate: given passages, else the document's title + text."""
    if context.texts is not None:
        return [context.texts[d] for d in doc_ids]
    docs = index.view().get_docs(list(doc_ids))
    return [docs[d].contents if d in docs else "" for d in doc_ids]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (Stage, Pipeline)):
        return str(value)
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_stage(name: str, params: dict[str, Any], positional: Sequence[Any] = ()) -> str:
    parts = [format_value(p) for p in positional]
    parts += [f"{key}={format_value(value)}" for key, value in params.items()]
    return f"{name}({','.join(parts)})" if parts else name
