"""Fine-tuning a bi-encoder with in-batch and hard negatives (MultipleNegativesRankingLoss), optionally
distilled from a cross-encoder (Margin-MSE, Hofstätter et al., 2020).

With a teacher, every (query, positive, negative) triple also carries the teacher's score margin
(positive minus negative), and the model's cosine margin is fitted to it: the single-vector model learns
which negatives are nearly relevant and which are far off, not only that the positive comes first. The
teacher's logits are divided by four standard deviations of all its scores (the ``label_scale`` on the
card) so that its margins fall in the range cosine differences can reach. Unlabelled lists (a document's
title as the query, the document as its positive, the miner's other candidates as negatives) add
training data the teacher alone labels.

Built on sentence-transformers' trainer: checkpoints every ``save_steps`` so an interrupted run
resumes, a fixed seed, and model selection on a held-out dev split (the better of the starting model
and the fine-tuned one, by dev nDCG@10, is saved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.hardware import training_runtime
from rankstack.models.loading import canonical_model_id, require, resolve_model_location
from rankstack.train._run import checkpoint_folder, run_facts, save_with_card, train_resuming, trainer_arguments
from rankstack.train.arguments import BiEncoderTraining
from rankstack.train.data import TrainingData, dev_qrels, mine_examples, pseudo_query_lists
from rankstack.train.teachers import check_cross_encoder, margin_scale, teacher_scores
from rankstack.types import Query, Run

logger = logging.getLogger(__name__)


def _dev_ndcg(model: Any, index: Index, queries: list[Query], qrels: list[Any]) -> float:
    view = index.view()
    docs = view.get_docs(list(view.doc_positions))
    doc_ids = list(docs)
    doc_vectors = model.encode([docs[d].contents for d in doc_ids], batch_size=32, normalize_embeddings=True,
                               convert_to_numpy=True)
    query_vectors = model.encode([q.text for q in queries], normalize_embeddings=True, convert_to_numpy=True)
    scores = {}
    for query, vector in zip(queries, query_vectors, strict=True):
        row = doc_vectors @ vector
        top = np.argsort(-row)[:100]
        scores[query.query_id] = {doc_ids[i]: float(row[i]) for i in top if doc_ids[i] != query.query_id}
    return evaluate(Run.from_scores(scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]


Examples = list[tuple[str, str, tuple[str, ...]]]


def _distillation_columns(examples: Examples, scores: list[list[float]]) -> tuple[dict[str, list[Any]], float]:
    """(anchor, positive, negative, label) columns, one row per negative, the label the teacher's margin
    over ``label_scale`` (returned): four standard deviations of every score the teacher gave."""
    label_scale = margin_scale([s for row in scores for s in row])
    columns: dict[str, list[Any]] = {"anchor": [], "positive": [], "negative": [], "label": []}
    for (query, positive, negatives), row in zip(examples, scores, strict=True):
        for negative, negative_score in zip(negatives, row[1:], strict=True):
            columns["anchor"].append(query)
            columns["positive"].append(positive)
            columns["negative"].append(negative)
            columns["label"].append((row[0] - negative_score) / label_scale)
    return columns, label_scale


def _contrastive_and_margins(model: Any, distil_weight: float) -> Any:
    """MultipleNegativesRankingLoss over the triples plus ``distil_weight`` x Margin-MSE on the teacher's
    scaled margins (cosine similarity, as the dense stage scores)."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
    from sentence_transformers.util import pairwise_cos_sim

    class ContrastiveAndMargins(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.contrastive = MultipleNegativesRankingLoss(model)
            self.margins = MarginMSELoss(model, similarity_fct=pairwise_cos_sim)

        def forward(self, features: Any, labels: Any) -> Any:
            return self.contrastive(features, labels) + distil_weight * self.margins(features, labels)

    return ContrastiveAndMargins()


def _teacher_data(data: TrainingData, index: Index, args: BiEncoderTraining,
                  advance: Callable[[int], None] | None) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The training columns labelled by ``args.teacher``, and what the card says of them."""
    examples: Examples = list(data.examples)
    if args.pseudo_queries:
        examples += pseudo_query_lists(index, args.pseudo_queries, args.miner, args.negatives + 1, args.seed)
    scores = teacher_scores(str(args.teacher), examples, training_runtime("auto", args.device).device, raw=True,
                            advance=advance)
    columns, label_scale = _distillation_columns(examples, scores)
    return columns, {"model": args.teacher, "pairs_scored": sum(len(row) for row in scores),
                     "pseudo_query_lists": len(examples) - len(data.examples), "label_scale": round(label_scale, 4)}


def train_bi_encoder(dataset_dir: str | Path, output: str | Path, index: Index, args: BiEncoderTraining, *,
                     callbacks: list[Any] | None = None,
                     progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Fine-tune ``args.base`` on the collection's judgements (distilled from ``args.teacher`` when given)
    and save the better of it and the starting model (by dev nDCG@10) with its training card; resumes from
    an interrupted run's newest checkpoint. ``callbacks`` go to the sentence-transformers trainer;
    ``progress(description, total)`` gives an ``advance(n)`` for the teacher's scoring."""
    sentence_transformers = require("sentence_transformers", "train", "Training")
    datasets = require("datasets", "train", "Training")
    require("accelerate", "train", "Training")
    try:  # sentence-transformers >= 6 moved the losses; older releases have them at the top level
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]

    started = time.perf_counter()
    output = Path(output)
    dataset = BeirDataset.open(dataset_dir)
    if args.teacher:
        check_cross_encoder(resolve_model_location(args.teacher), args.teacher)  # before any mining
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.negatives,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("training data: %s", data.to_json())
    teacher: dict[str, Any] | None = None
    if args.teacher:
        pairs = (len(data.examples) + args.pseudo_queries) * (args.negatives + 1)
        columns, teacher = _teacher_data(data, index, args, progress("teacher scoring", pairs) if progress else None)
        loss_name = f"MultipleNegativesRankingLoss + {args.distil_weight} x MarginMSELoss (teacher margins, cosine)"
    else:
        columns = {"anchor": [t[0] for t in data.triples], "positive": [t[1] for t in data.triples],
                   "negative": [t[2] for t in data.triples]}
        loss_name = "MultipleNegativesRankingLoss"
    model = sentence_transformers.SentenceTransformer(resolve_model_location(args.base), device="cpu")
    qrels = dev_qrels(dataset, args.split, data.dev_queries)
    base_dev = _dev_ndcg(model, index, data.dev_queries, qrels) if data.dev_queries else None
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.SentenceTransformerTrainingArguments(
        **trainer_arguments(checkpoints, args), batch_sampler="no_duplicates")
    loss = _contrastive_and_margins(model, args.distil_weight) if args.teacher else \
        MultipleNegativesRankingLoss(model)
    trainer = sentence_transformers.SentenceTransformerTrainer(model=model, args=arguments,
                                                               train_dataset=datasets.Dataset.from_dict(columns),
                                                               loss=loss, callbacks=callbacks)
    resumed = train_resuming(trainer, checkpoints)
    tuned_dev = _dev_ndcg(model, index, data.dev_queries, qrels) if data.dev_queries else None
    kept = "fine-tuned" if base_dev is None or tuned_dev is None or tuned_dev >= base_dev else "base"
    if kept == "base":
        logger.warning("fine-tuning lowered dev nDCG@10 (%.4f -> %.4f); saving the starting model", base_dev,
                       tuned_dev)
        model = sentence_transformers.SentenceTransformer(resolve_model_location(args.base), device="cpu")
    card = {"kind": "bi-encoder", "base": canonical_model_id(args.base), "dataset": str(dataset.root),
            "split": args.split, "data": data.to_json(), "miner": args.miner,
            "parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                           "seed": args.seed, "negatives": args.negatives, "loss": loss_name,
                           "max_steps": args.max_steps},
            "teacher": teacher,
            "dev_ndcg@10": {"base": base_dev, "fine_tuned": tuned_dev}, "kept": kept, **run_facts(resumed, started)}
    save_with_card(model, output, card)
    return card
