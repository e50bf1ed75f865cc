"""Stage names known to the pipeline parser, and checking of their parameters.

Third parties register their own stage with :func:`register_stage`; the factory receives the index
the pipeline runs on, the positional arguments (sub-pipelines, for fusion) and the keyword arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rankstack.errors import PipelineError, UnknownStageError

StageFactory = Callable[..., Any]
_FACTORIES: dict[str, StageFactory] = {}


def register_stage(name: str) -> Callable[[StageFactory], StageFactory]:
    def decorator(factory: StageFactory) -> StageFactory:
        _FACTORIES[name] = factory
        return factory
    return decorator


def register_keyword_stage(name: str, stage_class: Any) -> None:
    """Register a stage built from its index and keyword parameters only (no sub-pipelines); the
    parameters, their types and defaults are those ``stage_class.__init__`` declares."""
    defaults = stage_class.declared_parameters()

    def factory(index: Any, *positional: Any, **params: Any) -> Any:
        if positional:
            example = ",".join(f"{key}=..." for key in defaults)
            raise PipelineError(f"{name} takes only keyword parameters: {name}({example})")
        return stage_class(index, **coerce_params(name, params, defaults))

    register_stage(name)(factory)


def stage_names() -> list[str]:
    _load_builtin_stages()
    return sorted(_FACTORIES)


def stage_factory(name: str) -> StageFactory:
    _load_builtin_stages()
    if name not in _FACTORIES:
        raise UnknownStageError(f"unknown stage '{name}'; known stages: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name]


def _load_builtin_stages() -> None:
    # Imported on first use, not at package import, so stages with heavy dependencies stay lazy.
    from rankstack.stages import bm25, colbert, dense, from_run, fusion, passages, prf, rerank, splade  # noqa: F401


def coerce_params(stage: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Check keyword arguments against a stage's defaults: unknown keys and wrong types are refused."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise PipelineError(f"{stage}: unknown parameter {', '.join(unknown)}; "
                            f"accepted: {', '.join(defaults) or 'none'}")
    values = dict(defaults)
    for key, raw in given.items():
        values[key] = _coerce(stage, key, raw, defaults[key])
    return values


_MAX_INT = 2**31 - 1


def _coerce(stage: str, key: str, raw: Any, default: Any) -> Any:
    expected = type(default)
    if isinstance(raw, expected) and not (expected is int and isinstance(raw, bool)):
        return raw
    text = str(raw)
    try:
        if expected is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if expected is int:
            number = int(text)
            if abs(number) > _MAX_INT:
                raise PipelineError(f"{stage}: parameter {key} must be at most {_MAX_INT:,} in size, got {text}")
            return number
        if expected is float:
            value = float(text)
            if not math.isfinite(value):  # inf and nan pass float() but no stage can use them
                raise PipelineError(f"{stage}: parameter {key} must be a finite number, got '{text}'")
            return value
        return text
    except ValueError:
        raise PipelineError(f"{stage}: parameter {key} must be {expected.__name__}, got '{text}'") from None
