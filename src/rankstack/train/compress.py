"""Compressing a trained cross-encoder: keep a subset of its layers, then distil the full model into it.

The student is the teacher with only ``keep_layers`` transformer layers (evenly spaced, always ending
with the last layer, whose output space the scoring head reads), so it starts close to the teacher.
It then learns the teacher's score margins (MarginMSE, Hofstätter et al., 2020) between each positive
and the hard negatives mined for it (the exact scores need not match, only the ordering signal), and
the teacher's hidden states at the layers it kept (``LayerDistillationLoss``). The teacher runs on
each batch as it is trained on, since its hidden states are too large to store for every pair.
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
from rankstack.models.hardware import training_runtime
from rankstack.models.loading import require, resolve_model_location
from rankstack.train._run import (
    checkpoint_folder,
    example_columns,
    run_facts,
    save_with_card,
    train_resuming,
    trainer_arguments,
)
from rankstack.train.arguments import DistillationTraining
from rankstack.train.cross_encoder import dev_reranking
from rankstack.train.data import dev_qrels, mine_examples, pseudo_query_lists

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


_ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LayerDistillationLoss(torch.nn.Module):
    """MarginMSE on the teacher's scores plus, per kept layer, the student's hidden states against the
    teacher's at the layer it was copied from.

    A few hundred training queries give only a few thousand score targets; the hidden states give a
    target for every token of every pair, which is what lets a layer-dropped student relearn what the
    dropped layers did (TinyBERT, Jiao et al., 2020). Each layer's squared error is divided by the
    teacher's mean square there, so layers of different scale weigh alike and ``hidden_weight`` reads
    as "relative error counts this much against the score margins" (at 20 the two start out about equal).
    """

    def __init__(self, model: Any, teacher: Any, kept_layers: list[int], hidden_weight: float) -> None:
        super().__init__()
        self.model = model
        self.kept_layers = kept_layers
        self.hidden_weight = hidden_weight
        # a plain attribute, not a sub-module: the trainer must neither optimise nor checkpoint the teacher
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)

    def _encode(self, model: Any, features: dict[str, Any]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        inputs = {k: features[k] for k in _ENCODER_INPUTS if k in features}
        output = model[0].model(**inputs, output_hidden_states=self.hidden_weight > 0)
        head_input = {**inputs, "token_embeddings": output.last_hidden_state}
        return model[1](head_input)["scores"].view(-1).float(), output.hidden_states

    def _hidden_error(self, features: dict[str, Any], student_hidden: tuple[torch.Tensor, ...],
                      teacher_hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
        mask = features["attention_mask"].float()
        tokens = mask.sum()
        error = torch.zeros((), dtype=torch.float32)
        for position, layer in enumerate(self.kept_layers):
            mine, theirs = student_hidden[position + 1].float(), teacher_hidden[layer + 1].float()
            squared = ((mine - theirs) ** 2).mean(-1).mul(mask).sum() / tokens
            scale = (theirs ** 2).mean(-1).mul(mask).sum() / tokens
            error = error + squared / scale.clamp(min=1e-6)
        return error / len(self.kept_layers)

    def forward(self, inputs: list[list[str]], labels: Any = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        queries, documents = inputs[0], inputs[1:]
        student_scores, teacher_scores = [], []
        hidden = torch.zeros((), dtype=torch.float32)
        # one document column at a time (all positives, then each negative): small batches keep the
        # attention buffers in cache instead of allocating gigabytes per step
        for column in documents:
            features = self.model.preprocess(list(zip(queries, column, strict=True)))
            scores, student_hidden = self._encode(self.model, features)
            with torch.no_grad():
                reference, teacher_hidden = self._encode(self.teacher, features)
            student_scores.append(scores)
            teacher_scores.append(reference)
            if self.hidden_weight > 0:
                hidden = hidden + self._hidden_error(features, student_hidden, teacher_hidden) / len(documents)
        mine, theirs = torch.stack(student_scores, dim=1), torch.stack(teacher_scores, dim=1)
        margins, target = mine[:, :1] - mine[:, 1:], theirs[:, :1] - theirs[:, 1:]
        losses = {"score_margin": torch.nn.functional.mse_loss(margins, target)}
        if self.hidden_weight > 0:
            losses["hidden_states"] = self.hidden_weight * hidden
        return losses


def distil_cross_encoder(dataset_dir: str | Path, output: str | Path, index: Index, args: DistillationTraining, *,
                         callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Compress ``args.teacher`` into a student keeping ``args.keep_layers`` of its layers, distilled on
    the collection's training queries; saves it with its training card and resumes an interrupted run.
    ``callbacks`` go to the sentence-transformers trainer."""
    sentence_transformers = require("sentence_transformers", "train", "Distillation")
    datasets = require("datasets", "train", "Distillation")
    require("accelerate", "train", "Distillation")

    started = time.perf_counter()
    output = Path(output)
    teacher = load_cross_encoder(str(resolve_model_location(args.teacher)), args.max_length)
    total = teacher[0].model.config.num_hidden_layers
    kept_layers = evenly_spaced_layers(total, args.keep_layers)
    student = drop_layers(teacher, kept_layers)
    dataset = BeirDataset.open(dataset_dir)
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.negatives,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("distillation data: %s", data.to_json())
    examples = data.examples + (pseudo_query_lists(index, args.pseudo_queries, args.miner, args.negatives + 1,
                                                   args.seed) if args.pseudo_queries else [])
    columns: dict[str, Any] = example_columns(examples)
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.cross_encoder.CrossEncoderTrainingArguments(
        **trainer_arguments(checkpoints, args))
    trainer = sentence_transformers.cross_encoder.CrossEncoderTrainer(
        model=student, args=arguments, train_dataset=datasets.Dataset.from_dict(columns),
        loss=LayerDistillationLoss(student, teacher, kept_layers, args.hidden_weight), callbacks=callbacks)
    resumed = train_resuming(trainer, checkpoints)
    qrels = dev_qrels(dataset, args.split, data.dev_queries)
    dev_ndcg = dev_reranking(index, data.dev_queries, qrels, args.miner, args.precision)
    dev = {"teacher": dev_ndcg(teacher), "student": dev_ndcg(student)} if data.dev_queries else {}
    card = {"kind": "cross-encoder", "head": "segment-similarity", "distilled_from": str(args.teacher),
            "layers": {"teacher": total, "kept": kept_layers}, "dataset": str(dataset.root), "split": args.split,
            "data": {**data.to_json(), "pseudo_query_lists": len(examples) - len(data.examples)},
            "miner": args.miner,
            "parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                           "seed": args.seed, "negatives": args.negatives, "max_length": args.max_length,
                           "max_steps": args.max_steps,
                           "precision": training_runtime(args.precision, args.device).precision,
                           "hidden_weight": args.hidden_weight,
                           "loss": "MarginMSE on teacher scores + relative MSE on kept layers' hidden states"},
            "dev_ndcg@10": {**dev, "first_stage": args.miner}, **run_facts(resumed, started)}
    save_with_card(student, output, card)
    return card
