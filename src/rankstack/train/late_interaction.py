"""Training a late-interaction (ColBERT) model from a bi-encoder checkpoint (the bundled MiniLM by default).

The model (:func:`rankstack.models.late_interaction.build_late_interaction_model`) adds to the transformer a
token projection to a small dimension (64 by default: 64 bytes per stored token in int8), query
augmentation with the tokenizer's mask token, punctuation left out of documents' scoring, and unit-length
token vectors scored by MaxSim. The loss is contrastive over the positive, mined hard negatives and the
batch's other documents (sentence-transformers' MultiVectorMultipleNegativesRankingLoss); with a
cross-encoder ``teacher`` the MaxSim margins (positive minus each negative) are also fitted to the
teacher's (MultiVectorMarginMSELoss). Built on sentence-transformers' MultiVectorEncoderTrainer: a fixed
seed, checkpoints every ``save_steps`` so an interrupted run resumes, and model selection on the same
held-out dev split as the other trainers (the starting or the trained model, whichever reranks the dev
queries' first-stage candidates better by nDCG@10).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.index.token_vectors import maxsim
from rankstack.io import BeirDataset
from rankstack.models.hardware import training_runtime
from rankstack.models.late_interaction import build_late_interaction_model
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
from rankstack.train.arguments import LateInteractionTraining
from rankstack.train.data import dev_qrels, mine_examples
from rankstack.train.teachers import check_cross_encoder, teacher_scores
from rankstack.types import Query, Run

logger = logging.getLogger(__name__)


def dev_reranking(index: Index, queries: list[Query], qrels: list[Any], first_stage: str
                  ) -> Callable[[Any], float | None]:
    """A scorer giving a model's nDCG@10 for ``first_stage >> colbert`` on the dev ``queries``; the candidates
    and their texts are fetched once, each document encoded once per model. None without queries."""
    if not queries:
        return lambda model: None
    context = SearchContext(ignore_identical_ids=True)
    candidates = parse_pipeline(first_stage, index).transform(queries, context=context)
    lists = [(query, [h.doc_id for h in candidates[query.query_id]]) for query in queries]
    doc_ids = sorted({d for _, ids in lists for d in ids})
    texts = candidate_texts(index, doc_ids, context)

    def ndcg(model: Any) -> float:
        documents = dict(zip(doc_ids, model.encode_document(texts, batch_size=32, convert_to_numpy=True),
                             strict=True))
        query_vectors = model.encode_query([q.text for q, _ in lists], batch_size=32, convert_to_numpy=True)
        scores = {query.query_id: dict(zip(ids, (float(s) for s in maxsim(vector, [documents[d] for d in ids])),
                                           strict=True))
                  for (query, ids), vector in zip(lists, query_vectors, strict=True)}
        return evaluate(Run.from_scores(scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]

    return ndcg


def _loss(model: Any, distil_weight: float, with_teacher: bool) -> Any:
    """Contrastive loss, plus the teacher's margins weighted ``distil_weight`` when there is a teacher."""
    torch = require("torch", "train", "Training")
    from sentence_transformers.multi_vector_encoder.losses import (
        MultiVectorMarginMSELoss,
        MultiVectorMultipleNegativesRankingLoss,
    )

    contrastive = MultiVectorMultipleNegativesRankingLoss(model)
    if not with_teacher:
        return contrastive

    class ContrastiveAndMargins(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.contrastive = contrastive
            self.margins = MultiVectorMarginMSELoss(model)

        def forward(self, features: Any, labels: Any) -> Any:
            return self.contrastive(features, labels) + distil_weight * self.margins(features, labels)

    return ContrastiveAndMargins()


def _examples(dataset: BeirDataset, index: Index, args: LateInteractionTraining) -> tuple[Any, list[Any]]:
    """The mined examples (only as many as ``max_steps`` batches use, seeded) and the dev qrels."""
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.negatives,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("training data: %s", data.to_json())
    if args.max_steps > 0 and len(data.examples) > args.max_steps * args.batch_size:
        data.skipped["examples_beyond_max_steps"] = len(data.examples) - args.max_steps * args.batch_size
        data.examples = random.Random(args.seed).sample(data.examples, args.max_steps * args.batch_size)
    return data, dev_qrels(dataset, args.split, data.dev_queries)


def train_late_interaction(dataset_dir: str | Path, output: str | Path, index: Index, args: LateInteractionTraining,
                           *, callbacks: list[Any] | None = None,
                           progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Train a ColBERT from ``args.base`` and save the better of it and the starting model (reranking the dev
    queries) with its training card; resumes from an interrupted run's newest checkpoint.
    ``progress(description, total)`` gives an ``advance(n)`` for the teacher's scoring."""
    sentence_transformers = require("sentence_transformers", "train", "Training")
    datasets = require("datasets", "train", "Training")
    torch = require("torch", "train", "Training")
    require("accelerate", "train", "Training")
    started = time.perf_counter()
    output = Path(output)
    dataset = BeirDataset.open(dataset_dir)
    if args.teacher:
        check_cross_encoder(resolve_model_location(args.teacher), args.teacher)  # before any mining
    data, qrels = _examples(dataset, index, args)
    runtime = training_runtime("auto", args.device)

    def fresh() -> Any:
        torch.manual_seed(args.seed)  # the projection starts from the same random draw every time
        return build_late_interaction_model(args.base, args.dimension, args.query_tokens, args.document_tokens,
                                            device=runtime.device)

    model = fresh()
    dev_ndcg = dev_reranking(index, data.dev_queries, qrels, args.dev_first_stage)
    base_dev = dev_ndcg(model)
    columns: dict[str, list[Any]] = dict(example_columns(data.examples))
    if args.teacher:
        # The teacher's logits, unscaled: a MaxSim sums one cosine per query token (32), so its margins span
        # units, as logits' do; probabilities would squeeze every target margin under 1.
        pairs = len(data.examples) * (args.negatives + 1)
        columns["label"] = teacher_scores(args.teacher, data.examples, runtime.device, raw=True,
                                          advance=progress("teacher scoring", pairs) if progress else None)
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.MultiVectorEncoderTrainingArguments(
        **trainer_arguments(checkpoints, args), batch_sampler="no_duplicates")
    trainer = sentence_transformers.MultiVectorEncoderTrainer(
        model=model, args=arguments, train_dataset=datasets.Dataset.from_dict(columns),
        loss=_loss(model, args.distil_weight, bool(args.teacher)), callbacks=callbacks)
    resumed = train_resuming(trainer, checkpoints)
    tuned_dev = dev_ndcg(model)
    kept = "fine-tuned" if base_dev is None or tuned_dev is None or tuned_dev >= base_dev else "base"
    if kept == "base":
        logger.warning("training lowered dev nDCG@10 (%.4f -> %.4f); saving the starting model", base_dev, tuned_dev)
        model = fresh()
    card = {"kind": "late-interaction", "base": canonical_model_id(args.base), "dataset": str(dataset.root),
            "split": args.split, "data": data.to_json(), "miner": args.miner, "teacher": args.teacher,
            "model": {"dimension": args.dimension, "query_tokens": args.query_tokens,
                      "document_tokens": args.document_tokens, "query_augmentation": "[MASK] tokens",
                      "similarity": "maxsim"},
            "parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                           "seed": args.seed, "negatives": args.negatives, "max_steps": args.max_steps,
                           "loss": "MultiVectorMultipleNegativesRankingLoss"
                                   + (f" + {args.distil_weight} x MultiVectorMarginMSELoss (teacher margins)"
                                      if args.teacher else "")},
            "teacher_labels": "logits" if args.teacher else None,
            "dev_ndcg@10": {"base": base_dev, "fine_tuned": tuned_dev, "first_stage": args.dev_first_stage},
            "kept": kept, **run_facts(resumed, started)}
    save_with_card(model, output, card)
    return card
