"""The checks every trainer with ``--teacher`` shares: a bi-encoder teacher is refused before anything is
written, and a (tiny) cross-encoder teacher scores every training pair once, reported to the progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def check_teacher_distillation(train: Callable[..., dict[str, Any]], arguments: Callable[..., Any],
                               settings: dict[str, Any], tiny_beir: Path, tiny_index: Any, tmp_path: Path,
                               loss: str, documents_per_example: int) -> dict[str, Any]:
    """Run ``train(dataset, output, index, arguments(teacher=..., **settings), progress=...)`` with a bi-encoder
    teacher (refused) and a cross-encoder one; return the second run's card."""
    from rankstack.errors import ModelLoadError
    from rankstack.models.loading import resolve_model_location
    from rankstack.train.arguments import CrossEncoderTraining
    from rankstack.train.cross_encoder import train_cross_encoder

    with pytest.raises(ModelLoadError, match="is a bi-encoder.*--teacher needs a cross-encoder"):
        train(tiny_beir, tmp_path / "refused", tiny_index,
              arguments(teacher=str(resolve_model_location("default")), **settings))
    assert not (tmp_path / "refused").exists() and not (tmp_path / ".refused.checkpoints").exists()

    teacher = tmp_path / "teacher"
    train_cross_encoder(tiny_beir, teacher, tiny_index,
                        CrossEncoderTraining(split="test", batch_size=2, max_steps=1, negatives=1, max_length=64,
                                             dev_fraction=0.0, precision="fp32"))
    scored: list[int] = []
    card = train(tiny_beir, tmp_path / "student", tiny_index, arguments(teacher=str(teacher), **settings),
                 progress=lambda description, total: scored.append)
    assert card["teacher_labels"] == "logits" and loss in card["parameters"]["loss"]
    # every example's positive and negatives were scored once, and the progress bar heard of each pair
    assert sum(scored) == card["data"]["examples"] * documents_per_example > 0
    return card
