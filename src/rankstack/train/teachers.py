"""Teachers for distillation (``rankstack adapt``, ``train bi-encoder --teacher``, ``train late-interaction
--teacher``): which cross-encoder, found offline, checked to be one, and its scores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import ModelLoadError, RankstackError
from rankstack.models.loading import SPLIT_CONFIG, resolve_model_location
from rankstack.train.adapt_settings import AdaptError

# Teachers tried, best first, when --teacher is not given: only ones already on disk (the Hugging Face
# cache) are used, so the default never reaches the network.
TEACHER_CANDIDATES = ("BAAI/bge-reranker-base", "cross-encoder/ms-marco-MiniLM-L12-v2",
                      "cross-encoder/ms-marco-MiniLM-L6-v2")


def _cached_location(model_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def resolve_teacher(teacher: str | None) -> tuple[str, str]:
    """(location, how it was found). None tries TEACHER_CANDIDATES in the local Hugging Face cache only."""
    if teacher:
        location = resolve_model_location(teacher)
        if not Path(location).is_dir():
            return _cached_location(location) or location, "--teacher"
        return location, "--teacher"
    for candidate in TEACHER_CANDIDATES:
        cached = _cached_location(candidate)
        if cached:
            return cached, f"default: {candidate} from the local Hugging Face cache"
    raise AdaptError("no teacher cross-encoder is available offline. Pass --teacher DIR_OR_ID: a cross-encoder "
                     "directory (for example one trained with `rankstack train cross-encoder DATASET -o DIR`), or "
                     f"download one once with `huggingface-cli download {TEACHER_CANDIDATES[-1]}` and run again")


def check_cross_encoder(location: str, name: str) -> None:
    """Refuse a model directory that is not a cross-encoder (a bi-encoder, a seq2seq model ...), naming the file."""
    root = Path(location)
    if not root.is_dir():
        return  # a hub id not in the cache: the loader says what is wrong
    if (root / SPLIT_CONFIG).is_file():
        return
    settings = root / "config_sentence_transformers.json"
    if settings.is_file() and json.loads(settings.read_text(encoding="utf-8")).get("model_type") == "CrossEncoder":
        return
    config = root / "config.json"
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or [] \
        if config.is_file() else []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return
    modules = root / "modules.json"
    what = "a bi-encoder (sentence embedding model)" if modules.is_file() and "Pooling" in modules.read_text(
        encoding="utf-8") else "not a cross-encoder"
    raise ModelLoadError(f"{config if config.is_file() else root}: teacher {name} is {what}; --teacher needs a "
                         "cross-encoder that scores (query, document) pairs, such as one trained with "
                         "`rankstack train cross-encoder` or a Hugging Face cross-encoder/... model")


def load_teacher(location: str, max_length: int) -> Any:
    """The teacher cross-encoder at ``location``; any loader failure becomes one message naming it."""
    from rankstack.models.cross_heads import load_cross_encoder

    try:
        return load_cross_encoder(location, max_length)
    except RankstackError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
        raise ModelLoadError(f"{location}: could not load the teacher as a cross-encoder "
                             f"({str(error)[:200]}); give a cross-encoder directory or Hugging Face id") from None


def margin_scale(scores: Any) -> float:
    """Four standard deviations of every score the teacher gave: the teacher's margins divided by it span
    about what differences of cosine similarities can (Margin-MSE on a cosine student, GPL-style)."""
    every = np.asarray(scores, dtype=np.float64).ravel()
    return max(float(every.std()) * 4.0, 1e-6) if every.size else 1.0


def score_pairs(model: Any, pairs: list[tuple[str, str]], batch_size: int = 32,
                 advance: Callable[[int], None] | None = None) -> np.ndarray:
    import torch

    scores = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        predicted = model.predict(batch, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                                  activation_fn=torch.nn.Identity())
        scores.append(np.asarray(predicted, dtype=np.float32).reshape(len(batch), -1)[:, -1])
        if advance:
            advance(len(batch))
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def teacher_scores(teacher: str, examples: list[tuple[str, str, tuple[str, ...]]], device: str = "cpu", *,
                   raw: bool = False, advance: Callable[[int], None] | None = None) -> list[list[float]]:
    """The teacher cross-encoder's score of the positive and of each negative, for every (query, positive,
    negatives) example. ``raw`` gives the model's logits (what Margin-MSE fits); otherwise the scores pass
    through the model's own activation, as ``CrossEncoder.predict`` gives them."""
    from rankstack.models.cross_heads import load_cross_encoder

    location = resolve_model_location(teacher)
    check_cross_encoder(location, teacher)
    model = load_cross_encoder(str(location), None, device)
    pairs = [(query, document) for query, positive, negatives in examples for document in (positive, *negatives)]
    if raw:
        flat = score_pairs(model, pairs, batch_size=32, advance=advance).tolist()
    else:
        predicted = model.predict(pairs, batch_size=32, show_progress_bar=False, convert_to_numpy=True)
        flat = np.asarray(predicted).reshape(len(pairs), -1)[:, -1].tolist()
        if advance:
            advance(len(pairs))
    width = 1 + (len(examples[0][2]) if examples else 0)
    return [flat[i * width:(i + 1) * width] for i in range(len(examples))]
