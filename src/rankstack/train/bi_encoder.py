"""Fine-tuning a bi-encoder with in-batch and hard negatives (MultipleNegativesRankingLoss).

Built on sentence-transformers' trainer: checkpoints every ``save_steps`` so an interrupted run
resumes, a fixed seed, and model selection on a held-out dev split (the better of the starting model
and the fine-tuned one, by dev nDCG@10, is saved).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.loading import canonical_model_id, require, resolve_model_location
from rankstack.train._run import checkpoint_folder, run_facts, save_with_card, train_resuming, trainer_arguments
from rankstack.train.arguments import BiEncoderTraining
from rankstack.train.data import dev_qrels, mine_examples
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


def train_bi_encoder(dataset_dir: str | Path, output: str | Path, index: Index, args: BiEncoderTraining, *,
                     callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``args.base`` on the collection's judgements and save the better of it and the starting
    model (by dev nDCG@10) with its training card; resumes from an interrupted run's newest checkpoint.
    ``callbacks`` go to the sentence-transformers trainer."""
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
    data = mine_examples(dataset, index, args.split, args.miner, dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("training data: %s", data.to_json())
    model = sentence_transformers.SentenceTransformer(resolve_model_location(args.base), device="cpu")
    qrels = dev_qrels(dataset, args.split, data.dev_queries)
    base_dev = _dev_ndcg(model, index, data.dev_queries, qrels) if data.dev_queries else None
    train = datasets.Dataset.from_dict({"anchor": [t[0] for t in data.triples],
                                        "positive": [t[1] for t in data.triples],
                                        "negative": [t[2] for t in data.triples]})
    checkpoints = checkpoint_folder(output)
    arguments = sentence_transformers.SentenceTransformerTrainingArguments(
        **trainer_arguments(checkpoints, args), batch_sampler="no_duplicates")
    trainer = sentence_transformers.SentenceTransformerTrainer(model=model, args=arguments, train_dataset=train,
                                                               loss=MultipleNegativesRankingLoss(model),
                                                               callbacks=callbacks)
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
                           "seed": args.seed, "loss": "MultipleNegativesRankingLoss", "max_steps": args.max_steps},
            "dev_ndcg@10": {"base": base_dev, "fine_tuned": tuned_dev}, "kept": kept, **run_facts(resumed, started)}
    save_with_card(model, output, card)
    return card
