"""Compressing a trained cross-encoder: keep a subset of its layers, then distil the full model into it.

The student is the teacher with only ``keep_layers`` transformer layers (evenly spaced, always ending
with the last layer, whose output space the scoring head reads), so it starts close to the teacher.
It then learns the teacher's score margins (MarginMSE, Hofstätter et al., 2020) between each positive
and the hard negatives mined for it: the exact scores need not match, only the ordering signal. The
teacher scores every training list once, up front.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from rankstack.errors import RankstackError
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.cross_heads import load_cross_encoder
from rankstack.models.encoder import precision_context, resolve_precision
from rankstack.models.loading import require, resolve_model_location
from rankstack.train._run import (
    checkpoint_folder,
    example_columns,
    save_with_card,
    train_resuming,
    trainer_arguments,
)
from rankstack.train.cross_encoder import dev_reranking
from rankstack.train.data import dev_qrels, mine_examples

logger = logging.getLogger(__name__)


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layer numbers, evenly spaced and ending with the last: 6 -> 3 gives [1, 3, 5]."""
    if not 0 < keep <= total:
        raise RankstackError(f"can keep between 1 and {total} layers, not {keep}")
    step = total / keep
    return sorted({total - 1 - int(i * step) for i in range(keep)})


def drop_layers(model: Any, keep: list[int]) -> Any:
    """A copy of a CrossEncoder whose transformer keeps only the layers numbered in ``keep``."""
    student = copy.deepcopy(model)
    backbone = student[0].model
    encoder = getattr(backbone, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise RankstackError(f"layer dropping supports BERT-style encoders, not {type(backbone).__name__}")
    encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in keep])
    backbone.config.num_hidden_layers = len(keep)
    return student


def _teacher_scores(teacher: Any, examples: list[tuple[str, str, tuple[str, ...]]],
                    precision: str) -> list[list[float]]:
    pairs = [(query, text) for query, positive, negatives in examples for text in (positive, *negatives)]
    with precision_context(resolve_precision(precision)):
        scores = teacher.predict(pairs, batch_size=64, show_progress_bar=True, convert_to_numpy=True).reshape(-1)
    width = 1 + len(examples[0][2])
    return [scores[i:i + width].astype(float).tolist() for i in range(0, len(scores), width)]


def distil_cross_encoder(teacher_model: str, dataset_dir: str | Path, output: str | Path, index: Index,
                         keep_layers: int = 3, split: str = "train", epochs: int = 2, batch_size: int = 16,
                         learning_rate: float = 5e-5, seed: int = 42, miner: str = "bm25%30", negatives: int = 7,
                         max_length: int = 256, dev_fraction: float = 0.1, save_steps: int = 50,
                         max_steps: int = -1, precision: str = "auto",
                         callbacks: list[Any] | None = None) -> dict[str, Any]:
    sentence_transformers = require("sentence_transformers", "train", "Distillation")
    datasets = require("datasets", "train", "Distillation")
    require("accelerate", "train", "Distillation")
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    started = time.perf_counter()
    output = Path(output)
    teacher = load_cross_encoder(str(resolve_model_location(teacher_model)), max_length)
    total = teacher[0].model.config.num_hidden_layers
    kept_layers = evenly_spaced_layers(total, keep_layers)
    student = drop_layers(teacher, kept_layers)
    dataset = BeirDataset.open(dataset_dir)
    data = mine_examples(dataset, index, split, miner, negatives_per_positive=negatives, dev_fraction=dev_fraction,
                         seed=seed)
    logger.info("distillation data: %s", data.to_json())
    labels = _teacher_scores(teacher, data.examples, precision)
    columns: dict[str, Any] = {**example_columns(data.examples), "label": labels}
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.cross_encoder.CrossEncoderTrainingArguments(**trainer_arguments(
        checkpoints, epochs, max_steps, batch_size, learning_rate, seed, save_steps,
        bf16=resolve_precision(precision) == "bf16"))
    trainer = sentence_transformers.cross_encoder.CrossEncoderTrainer(
        model=student, args=arguments, train_dataset=datasets.Dataset.from_dict(columns),
        loss=MarginMSELoss(student), callbacks=callbacks)
    resumed = train_resuming(trainer, checkpoints)
    qrels = dev_qrels(dataset, split, data.dev_queries)
    dev_ndcg = dev_reranking(index, data.dev_queries, qrels, miner, precision)
    dev = {"teacher": dev_ndcg(teacher), "student": dev_ndcg(student)} if data.dev_queries else {}
    card = {"kind": "cross-encoder", "head": "segment-similarity", "distilled_from": str(teacher_model),
            "layers": {"teacher": total, "kept": kept_layers}, "dataset": str(dataset.root), "split": split,
            "data": data.to_json(), "miner": miner,
            "parameters": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                           "negatives": negatives, "max_length": max_length, "max_steps": max_steps,
                           "precision": resolve_precision(precision), "loss": "MarginMSELoss on teacher scores"},
            "dev_ndcg@10": {**dev, "first_stage": miner}, "resumed_from": resumed.name if resumed else None,
            "train_seconds": round(time.perf_counter() - started, 1)}
    save_with_card(student, output, card)
    return card
