"""Which pipelines an HTTP client may run, and what they may touch.

By default a client chooses among the operator's presets: a requested pipeline must have the shape of
one of them, the same stages with the same models and settings, and may differ only in the parameters
declared tunable below (BM25's k1 and b, fusion weights, HNSW effort) and in cut-off depths up to the
service's limit. So a client can neither read a server file (``run(path=...)``, ``states=DIR``), nor
load a model the operator did not configure, nor start an expensive job such as encoding the corpus.

``--allow-any-pipeline`` lets clients compose any pipeline; even then, files must lie under the
configured data root and models must be configured ones or directories under the model root.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rankstack.errors import PipelineError
from rankstack.stages import Pipeline
from rankstack.stages.base import Cutoff, Stage

# Parameters a client may tune within the bounds each stage enforces on its own.
TUNABLE_PARAMETERS: dict[str, frozenset[str]] = {
    "bm25": frozenset({"k1", "b"}),
    "rrf": frozenset({"k"}),
    "linear": frozenset({"alpha"}),
    "dense": frozenset({"ef_search"}),
    "rm3": frozenset({"fb_docs", "fb_terms", "original_weight"}),  # bounded by the stages themselves
    "rocchio": frozenset({"fb_docs", "fb_terms", "alpha", "beta"}),
    "dense_prf": frozenset({"fb_docs", "alpha", "beta"}),
}
FILE_PARAMETERS = frozenset({"path", "states"})  # parameters naming files or folders on the server
MODEL_PARAMETERS = frozenset({"model"})


class PolicyError(PipelineError):
    """A pipeline this server does not let HTTP clients run."""


def stages_of(pipeline: Pipeline) -> Iterator[Stage]:
    """Every stage, sub-pipelines of fusion and passage wrappers included."""
    for stage in pipeline.stages:
        yield stage
        for inner in stage.positional():
            if isinstance(inner, Pipeline):
                yield from stages_of(inner)


def pipeline_shape(pipeline: Pipeline) -> str:
    """The pipeline with tunable parameters and cut-off depths blanked: what must match a preset.

    Cut-offs at the end are left out: they only shorten the result list.
    """
    stages = list(pipeline.stages)
    while len(stages) > 1 and isinstance(stages[-1], Cutoff):
        stages.pop()
    parts = []
    for stage in stages:
        if isinstance(stage, Cutoff):
            parts.append("%#")
            continue
        tunable = TUNABLE_PARAMETERS.get(stage.name, frozenset())
        params = ",".join(f"{k}={'#' if k in tunable else v!r}" for k, v in stage.params().items())
        inner = ",".join(pipeline_shape(p) for p in stage.positional() if isinstance(p, Pipeline))
        parts.append(f">>{stage.name}({inner};{params})")
    return "".join(parts)


@dataclass
class PipelinePolicy:
    presets: Sequence[Pipeline]
    max_depth: int = 1000
    allow_any_pipeline: bool = False
    data_root: Path | None = None
    model_root: Path | None = None
    _shapes: frozenset[str] = field(init=False)
    _models: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._shapes = frozenset(pipeline_shape(p) for p in self.presets)
        self._models = frozenset(str(stage.params()[k]) for p in self.presets for stage in stages_of(p)
                                 for k in MODEL_PARAMETERS if k in stage.params())

    def check(self, pipeline: Pipeline) -> None:
        """Raise :class:`PolicyError` unless HTTP clients may run ``pipeline``."""
        for stage in stages_of(pipeline):
            if isinstance(stage, Cutoff) and stage.top_k > self.max_depth:
                raise PolicyError(f"cut-off %{stage.top_k} is deeper than this server allows ({self.max_depth})")
        if not self.allow_any_pipeline:
            if pipeline_shape(pipeline) not in self._shapes:
                raise PolicyError(
                    f"this server runs its configured pipelines only (tunable: k1 and b of bm25, k of rrf, alpha "
                    f"of linear, ef_search of dense, and cut-off depths): '{pipeline}' is not one of them. "
                    f"GET /v1/pipelines lists them")
            return
        for stage in stages_of(pipeline):
            params = stage.params()
            for key in FILE_PARAMETERS & params.keys():
                if params[key]:
                    self._check_file(stage, key, str(params[key]))
            for key in MODEL_PARAMETERS & params.keys():
                self._check_model(stage, str(params[key]))

    def _check_file(self, stage: Stage, key: str, value: str) -> None:
        if self.data_root is None:
            raise PolicyError(f"{stage.name}: {key}= reads the server's files, and this server has no data root "
                              "for clients (start it with --data-root DIR)")
        if not _within(Path(value), self.data_root):
            raise PolicyError(f"{stage.name}: {key}= must name a file under the server's data root")

    def _check_model(self, stage: Stage, model: str) -> None:
        if model in self._models:
            return
        if self.model_root is not None and _within(Path(model), self.model_root):
            return
        raise PolicyError(f"{stage.name}: model '{model}' is not one this server was configured with "
                          f"({', '.join(sorted(self._models)) or 'none'})")


def _within(path: Path, root: Path) -> bool:
    """Whether ``path`` (relative ones taken from the root) lies under ``root`` once links are resolved."""
    resolved = (root / path).resolve() if not path.is_absolute() else path.resolve()
    return resolved.is_relative_to(root.resolve())
