"""Training a learned sparse retriever (SPLADE) on a collection's judgements.

The model is sentence-transformers' ``SparseEncoder``: a transformer with a masked-language-model head
whose logits are pooled over tokens as ``max log(1 + relu(logit))``, one weight per vocabulary entry.
A sentence-embedding checkpoint (the bundled MiniLM) has no MLM head, so one is made: the decoder is
the word embeddings (tied), the transform starts as the identity (dense = I, LayerNorm neutral) and the
decoder bias starts at ``head_bias`` (negative), so that from the first step each text activates only
its best-matching vocabulary entries (the text's own words and near neighbours) instead of all 30k.

The loss is SparseMultipleNegativesRankingLoss (in-batch negatives plus hard negatives mined by a
first stage), with a cross-encoder ``teacher`` plus Margin-MSE on the teacher's logits (the sparse dot
products' margins between the positive and each negative fitted to the teacher's), wrapped in SpladeLoss
with the FLOPS regulariser on queries and documents, its weight ramped up quadratically over the first
``regularizer_warmup`` of training. The held-out dev queries are the ones the other trainers hold out;
their nDCG@10 is measured over the dev candidates (the miner's top ``dev_depth`` plus the judged
documents), which keeps dev scoring to a few hundred encodings.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import ModelLoadError
from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.io.corpus import read_corpus
from rankstack.models.hardware import training_runtime
from rankstack.models.loading import canonical_model_id, require, resolve_model_location
from rankstack.models.splade import SpladeEncoder
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.train._run import (
    checkpoint_folder,
    example_columns,
    run_facts,
    save_with_card,
    train_resuming,
    trainer_arguments,
)
from rankstack.train.arguments import SparseTraining
from rankstack.train.data import dev_qrels, mine_examples
from rankstack.train.splade_head import lean_splade_head
from rankstack.train.teachers import check_cross_encoder, teacher_scores
from rankstack.types import Query, Run

logger = logging.getLogger(__name__)


def _initialise_mlm_head(model: Any, head_bias: float) -> None:
    """Identity transform, neutral LayerNorm, decoder tied to the word embeddings, bias ``head_bias``."""
    torch = require("torch", "train", "Training")
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if predictions is None:
        raise ModelLoadError(f"{type(model).__name__} has no BERT-style MLM head (cls.predictions) to initialise; "
                             "start from a BERT-family checkpoint (--base) or from one with an MLM head")
    transform = predictions.transform
    with torch.no_grad():
        transform.dense.weight.copy_(torch.eye(transform.dense.weight.shape[0]))
        transform.dense.bias.zero_()
        transform.LayerNorm.weight.fill_(1.0)
        transform.LayerNorm.bias.zero_()
        predictions.bias.fill_(head_bias)
    model.tie_weights()


def corpus_idf(tokenizer: Any, texts: list[str]) -> Any:
    """BM25's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``, of every vocabulary entry over ``texts`` as the
    tokenizer splits them; special tokens weigh 0. The starting query table of inference-free SPLADE: a query
    then starts as a BM25-like bag of its word pieces instead of every piece weighing 1."""
    torch = require("torch", "train", "Training")
    vocabulary = len(tokenizer.get_vocab())
    df = np.zeros(vocabulary, dtype=np.float64)
    for start in range(0, len(texts), 512):
        for ids in tokenizer(texts[start:start + 512], add_special_tokens=False, truncation=False,
                             verbose=False)["input_ids"]:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n = float(len(texts))
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    idf[[i for i in tokenizer.all_special_ids if 0 <= i < vocabulary]] = 0.0
    return torch.tensor(idf, dtype=torch.float32)


def build_splade_model(base: str, max_length: int = 256, head_bias: float = -8.0,
                       inference_free_queries: bool = False, query_weights: Any = None) -> Any:
    """A SPLADE ``SparseEncoder`` on ``base``: its own MLM head when it has one (the head's bias shifted by
    ``head_bias``), else a new head made from the word embeddings (see the module's docstring).

    With ``inference_free_queries`` documents go through that model and queries through a static table of
    token weights (sentence-transformers' ``Router`` with a ``SparseStaticEmbedding``; ``query_weights`` to
    start, for example :func:`corpus_idf`, else every weight 1): a query is then weighed without running the
    transformer."""
    transformers = require("transformers", "train", "Training")
    sentence_transformers = require("sentence_transformers", "train", "Training")
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    location = str(resolve_model_location(base))
    try:
        model, info = transformers.AutoModelForMaskedLM.from_pretrained(location, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load {base} as a masked language model ({str(error)[:200]}); give a "
                             "BERT-family checkpoint with --base") from None
    missing = [k for k in info.get("missing_keys", []) if "predictions" in k or "lm_head" in k or "cls." in k]
    if missing:
        logger.info("%s has no MLM head (%d missing weights); initialising one from the word embeddings",
                    base, len(missing))
        _initialise_mlm_head(model, head_bias)
    else:
        predictions = model.cls.predictions if hasattr(model, "cls") else None
        if predictions is not None and head_bias:
            with require("torch", "train", "Training").no_grad():
                predictions.bias.add_(head_bias)
    tokenizer = transformers.AutoTokenizer.from_pretrained(location)
    with tempfile.TemporaryDirectory(prefix="rankstack-splade-") as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        from sentence_transformers.base.modules.transformer import Transformer

        transformer = Transformer(staging, transformer_task="fill-mask", max_seq_length=max_length)
        pooling = SpladePooling(pooling_strategy="max", activation_function="relu",
                                embedding_dimension=int(model.config.vocab_size))
        if not inference_free_queries:
            return sentence_transformers.SparseEncoder(modules=[transformer, pooling], device="cpu")
        from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding

        router = Router.for_query_document(query_modules=[SparseStaticEmbedding(tokenizer=transformer.tokenizer,
                                                                                 weight=query_weights)],
                                           document_modules=[transformer, pooling])
        return sentence_transformers.SparseEncoder(modules=[router], device="cpu")


def dev_retrieval(index: Index, queries: list[Query], qrels: list[Any], miner: str, depth: int
                  ) -> Any:
    """A scorer giving a SPLADE model's nDCG@10 on ``queries``, retrieving among the dev candidates: the
    miner's top ``depth`` and every judged document of those queries (fetched once)."""
    if not queries or depth < 1:
        return lambda model: None
    context = SearchContext(ignore_identical_ids=True)
    candidates = parse_pipeline(f"{miner}%{depth}" if "%" not in miner else miner, index).transform(
        queries, context=context)
    doc_ids = sorted({h.doc_id for q in queries for h in candidates[q.query_id][:depth]} |
                     {q.doc_id for q in qrels})
    docs = index.view().get_docs(doc_ids)
    doc_ids = [d for d in doc_ids if d in docs]
    texts = [docs[d].contents for d in doc_ids]

    def ndcg(model: Any) -> float:
        encoder = SpladeEncoder("in-training", loaded=model)
        matrix = encoder.encode_docs(texts).T.tocsr()
        query_matrix = encoder.encode_queries([q.text for q in queries])
        scores = np.asarray((query_matrix @ matrix).todense())
        found = {}
        for query, row in zip(queries, scores, strict=True):
            top = np.argsort(-row, kind="stable")[:100]
            found[query.query_id] = {doc_ids[i]: float(row[i]) for i in top
                                     if doc_ids[i] != query.query_id and row[i] > 0}
        return evaluate(Run.from_scores(found), qrels, ["nDCG@10"]).aggregate["nDCG@10"]

    return ndcg


def _mean_active(model: Any, texts: list[str]) -> float | None:
    if not texts:
        return None
    encoded = SpladeEncoder("in-training", loaded=model).encode_docs(texts)
    return round(float(np.diff(encoded.indptr).mean()), 1)


def _ranking_loss(model: Any, distil_weight: float, with_teacher: bool) -> Any:
    """The loss SpladeLoss wraps: contrastive, plus the teacher's margins weighted ``distil_weight`` when there
    is a teacher (both from the one set of embeddings SpladeLoss computes, each logged apart)."""
    from sentence_transformers.sparse_encoder.losses import SparseMarginMSELoss, SparseMultipleNegativesRankingLoss

    contrastive = SparseMultipleNegativesRankingLoss(model)
    if not with_teacher:
        return contrastive
    margins = SparseMarginMSELoss(model)

    class ContrastiveAndMargins(type(contrastive)):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__(model)
            self.margins = margins

        def compute_loss_from_embeddings(self, embeddings: list[Any], labels: Any) -> dict[str, Any]:
            return {"contrastive_loss": super().compute_loss_from_embeddings(embeddings, labels),
                    "margin_mse_loss": distil_weight * self.margins.compute_loss_from_embeddings(embeddings, labels)}

    return ContrastiveAndMargins()


def _routing(args: SparseTraining) -> dict[str, Any]:
    """With inference-free queries: queries to the static table (learning fast), documents to the transformer."""
    if not args.inference_free_queries:
        return {}
    return {"router_mapping": {"query": "query", "positive": "document",
                               **{f"negative_{k + 1}": "document" for k in range(args.negatives)}},
            "learning_rate_mapping": {r"sub_modules\.query\.0\.weight": args.static_learning_rate}}


def _build_for(args: SparseTraining, dataset: BeirDataset) -> Any:
    """The model to train; inference-free queries start from the collection's idf (see :func:`corpus_idf`)."""
    weights = None
    if args.inference_free_queries:
        tokenizer = require("transformers", "train", "Training").AutoTokenizer.from_pretrained(
            str(resolve_model_location(args.base)))
        weights = corpus_idf(tokenizer, [d.contents for d in read_corpus(dataset.corpus_path)])
    return build_splade_model(args.base, args.max_length, args.head_bias, args.inference_free_queries, weights)


def _card_parameters(args: SparseTraining) -> dict[str, Any]:
    return {"negatives": args.negatives, "distil_weight": args.distil_weight if args.teacher else None,
            "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "seed": args.seed, "max_length": args.max_length, "max_steps": args.max_steps,
            "head_bias": args.head_bias, "document_regularizer": args.document_regularizer,
            "query_regularizer": args.query_regularizer, "regularizer_warmup": args.regularizer_warmup,
            "inference_free_queries": args.inference_free_queries,
            "query_table_start": "collection idf" if args.inference_free_queries else None,
            "precision": training_runtime("auto", args.device).precision,
            "head": "lean (train.splade_head)" if args.lean_head else "plain",
            "loss": "SpladeLoss(SparseMultipleNegativesRankingLoss"
                    + (f" + {args.distil_weight} x SparseMarginMSELoss (teacher margins)" if args.teacher else "")
                    + ", FLOPS, quadratic ramp)"}


def train_sparse(dataset_dir: str | Path, output: str | Path, index: Index, args: SparseTraining, *,
                 callbacks: list[Any] | None = None,
                 progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Train a SPLADE model on ``args.base`` and save it (a sentence-transformers SparseEncoder directory)
    with its training card; resumes from an interrupted run's newest checkpoint.
    ``progress(description, total)`` gives an ``advance(n)`` for the teacher's scoring."""
    require("sentence_transformers", "train", "Training")
    datasets = require("datasets", "train", "Training")
    require("accelerate", "train", "Training")
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import (
        SpladeRegularizerWeightSchedulerCallback,
    )
    from sentence_transformers.sparse_encoder.losses import SpladeLoss

    started = time.perf_counter()
    output = Path(output)
    dataset = BeirDataset.open(dataset_dir)
    if args.teacher:
        check_cross_encoder(resolve_model_location(args.teacher), args.teacher)  # before any mining
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.negatives,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    logger.info("training data: %s", data.to_json())
    model = _build_for(args, dataset)
    qrels = dev_qrels(dataset, args.split, data.dev_queries)
    dev_ndcg = dev_retrieval(index, data.dev_queries, qrels, args.miner, args.dev_depth)
    probe = [e[1] for e in data.examples[:32]]
    active_before = _mean_active(model, probe)
    columns: dict[str, list[Any]] = dict(example_columns(data.examples))
    if args.teacher:
        # The teacher's logits, unscaled: a SPLADE score is an unbounded dot product, as a logit is.
        pairs = len(data.examples) * (args.negatives + 1)
        columns["label"] = teacher_scores(args.teacher, data.examples, training_runtime("auto", args.device).device,
                                          raw=True, advance=progress("teacher scoring", pairs) if progress else None)
    loss = SpladeLoss(model, _ranking_loss(model, args.distil_weight, bool(args.teacher)),
                      document_regularizer_weight=args.document_regularizer,
                      query_regularizer_weight=None if args.inference_free_queries else args.query_regularizer)
    schedule = SpladeRegularizerWeightSchedulerCallback(loss, scheduler_type="quadratic",
                                                        warmup_ratio=args.regularizer_warmup)
    checkpoints = checkpoint_folder(output)
    arguments = SparseEncoderTrainingArguments(**trainer_arguments(checkpoints, args), batch_sampler="no_duplicates",
                                               **_routing(args))
    trainer = SparseEncoderTrainer(model=model, args=arguments,
                                   train_dataset=datasets.Dataset.from_dict(columns),
                                   loss=loss, callbacks=[schedule, *(callbacks or [])])
    with lean_splade_head(model) if args.lean_head else nullcontext():
        resumed = train_resuming(trainer, checkpoints)
    tuned_dev = dev_ndcg(model)
    card = {"kind": "splade", "base": canonical_model_id(args.base), "dataset": str(dataset.root),
            "split": args.split, "data": data.to_json(), "miner": args.miner, "teacher": args.teacher,
            "teacher_labels": "logits" if args.teacher else None,
            "parameters": _card_parameters(args),
            "active_terms_per_doc": {"start": active_before, "trained": _mean_active(model, probe)},
            "dev_ndcg@10": {"fine_tuned": tuned_dev,
                            "candidates": f"{args.miner} top {args.dev_depth} + judged documents"},
            "kept": "fine-tuned", **run_facts(resumed, started)}
    save_with_card(model, output, card)
    return card
