"""Fine-tuning a cross-encoder reranker (monoBERT style) on a collection's judgements.

The model is a transformer that reads query and document together, scored by the
:class:`~rankstack.models.cross_heads.SegmentSimilarity` head, so that a sentence-embedding checkpoint
(the bundled MiniLM) starts out ranking as well as its bi-encoder instead of from a random head. The
loss is listwise: a softmax over the positive, ``negatives`` hard negatives mined by a first stage and
one in-batch negative (sentence-transformers' cross-encoder MultipleNegativesRankingLoss on raw
scores). Built on sentence-transformers' CrossEncoderTrainer: a fixed seed, bf16 autocast where the
CPU has bf16 units, checkpoints every ``save_steps`` so an interrupted run resumes, and model
selection on a held-out dev split (the starting or the fine-tuned model, whichever reranks the dev
queries better by nDCG@10).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.cross_heads import build_segment_cross_encoder
from rankstack.models.encoder import precision_context
from rankstack.models.hardware import training_runtime
from rankstack.models.loading import canonical_model_id, require, resolve_model_location
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.stages.base import candidate_texts
from rankstack.train._run import (
    checkpoint_folder,
    example_columns,
    run_facts,
    save_with_card,
    train_resuming,
    trainer_arguments,
)
from rankstack.train.arguments import CrossEncoderTraining
from rankstack.train.data import dev_qrels, mine_examples
from rankstack.types import Query, Run

logger = logging.getLogger(__name__)


def dev_reranking(index: Index, queries: list[Query], qrels: list[Any], first_stage: str,
                  precision: str = "auto") -> Callable[[Any], float | None]:
    """A scorer giving a model's nDCG@10 for ``first_stage >> model`` on ``queries`` (the dev split). The
    candidates and their texts are fetched once, however many models are compared; None without queries."""
    if not queries:
        return lambda model: None
    context = SearchContext(ignore_identical_ids=True)
    candidates = parse_pipeline(first_stage, index).transform(queries, context=context)
    lists = []
    for query in queries:
        doc_ids = [h.doc_id for h in candidates[query.query_id]]
        lists.append((query, doc_ids, candidate_texts(index, doc_ids, context)))

    def ndcg(model: Any) -> float:
        scores: dict[str, dict[str, float]] = {}
        with precision_context(training_runtime(precision).precision):
            for query, doc_ids, texts in lists:
                predicted = model.predict([(query.text, t) for t in texts], batch_size=32, show_progress_bar=False,
                                          convert_to_numpy=True).reshape(len(texts), -1)[:, -1]
                scores[query.query_id] = {d: float(x) for d, x in zip(doc_ids, predicted, strict=True)}
        return evaluate(Run.from_scores(scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]

    return ndcg


def train_cross_encoder(dataset_dir: str | Path, output: str | Path, index: Index, args: CrossEncoderTraining, *,
                        callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``args.base`` as a reranker and save the better of it and the starting model (reranking
    the dev queries) with its training card; resumes from an interrupted run's newest checkpoint.
    ``callbacks`` go to the sentence-transformers trainer."""
    sentence_transformers = require("sentence_transformers", "train", "Training")
    datasets = require("datasets", "train", "Training")
    require("accelerate", "train", "Training")
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    started = time.perf_counter()
    output = Path(output)
    dataset = BeirDataset.open(dataset_dir)
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.negatives,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("training data: %s", data.to_json())
    location = str(resolve_model_location(args.base))
    model = build_segment_cross_encoder(location, args.max_length)
    qrels = dev_qrels(dataset, args.split, data.dev_queries)
    dev_ndcg = dev_reranking(index, data.dev_queries, qrels, args.miner, args.precision)
    base_dev = dev_ndcg(model)
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.cross_encoder.CrossEncoderTrainingArguments(
        **trainer_arguments(checkpoints, args))
    # Raw scores, no sigmoid: the head's scaled cosine is already a logit, and a sigmoid would saturate it.
    loss = MultipleNegativesRankingLoss(model, num_negatives=1, scale=1, activation_fn=torch.nn.Identity())
    trainer = sentence_transformers.cross_encoder.CrossEncoderTrainer(
        model=model, args=arguments, train_dataset=datasets.Dataset.from_dict(example_columns(data.examples)),
        loss=loss, callbacks=callbacks)
    resumed = train_resuming(trainer, checkpoints)
    tuned_dev = dev_ndcg(model)
    kept = "fine-tuned" if base_dev is None or tuned_dev is None or tuned_dev >= base_dev else "base"
    if kept == "base":
        logger.warning("fine-tuning lowered dev nDCG@10 (%.4f -> %.4f); saving the starting model", base_dev,
                       tuned_dev)
        model = build_segment_cross_encoder(location, args.max_length)
    card = {"kind": "cross-encoder", "head": "segment-similarity", "base": canonical_model_id(args.base),
            "dataset": str(dataset.root), "split": args.split, "data": data.to_json(), "miner": args.miner,
            "parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                           "seed": args.seed, "negatives": args.negatives, "max_length": args.max_length,
                           "max_steps": args.max_steps,
                           "precision": training_runtime(args.precision, args.device).precision,
                           "loss": "MultipleNegativesRankingLoss (listwise softmax, raw scores)"},
            "dev_ndcg@10": {"base": base_dev, "fine_tuned": tuned_dev, "first_stage": args.miner}, "kept": kept,
            **run_facts(resumed, started)}
    save_with_card(model, output, card)
    return card
