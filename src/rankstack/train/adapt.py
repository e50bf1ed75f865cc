"""Zero-label domain adaptation (``rankstack adapt``): a corpus in, an adapted bi-encoder (and optionally a
reranker) plus a card out, with no relevance judgements.

1. Pseudo-queries from the documents (``pseudo_queries.py``, or a generator from ``generators.py``).
2. Candidates for each from the hybrid first stage (``rrf(bm25,dense)``, or the z-score linear hybrid).
3. A teacher cross-encoder scores every (query, candidate) pair, or, with no teacher, the hybrid's own
   standardised BM25 and cosine scores label them (``labellers.py``).
4. The bi-encoder learns the teacher's score margins between the query's source document and each
   candidate (MarginMSE, GPL: Wang et al., 2022); with ``reranker`` a small cross-encoder is distilled
   from the same scores.
5. A label-free self-check on held-out pseudo-queries: nDCG@10 of each model against the teacher's
   ranking as graded labels. An adapted model that agrees with the teacher less than the model it
   started from is not recommended; the card's ``suggested_pipeline`` then keeps the unadapted one.

The mined and labelled lists are kept next to the output (``.NAME.checkpoints``) with the trainer's
checkpoints, so an interrupted run (or one stopped for a too-short budget) resumes without relabelling.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankstack.errors import EmptyInputError
from rankstack.index import Index
from rankstack.models.loading import canonical_model_id, require, resolve_model_location
from rankstack.stages import parse_pipeline
from rankstack.train._run import checkpoint_folder, latest_checkpoint, trainer_arguments
from rankstack.train.adapt_lists import (
    LabelledList,
    ProgressFactory,
    corpus_documents,
    label_lists,
    make_queries,
    save_lists,
    saved_lists,
    training_rows,
)
from rankstack.train.adapt_settings import (
    MAX_AUTO_QUERIES,
    MIN_AUTO_QUERIES,
    AdaptError,
    AdaptSettings,
    hybrid_pipeline,
    parse_budget,
)
from rankstack.train.arguments import BiEncoderTraining
from rankstack.train.labellers import Labeller, choose_labels, make_labeller
from rankstack.train.pseudo_queries import check_source
from rankstack.train.self_check import self_check, suggested_pipeline
from rankstack.train.teachers import check_cross_encoder, load_teacher

logger = logging.getLogger(__name__)
CARD = "adapt_card.json"
# A training step over the time of a forward pass over the same batch. Measured with the bundled MiniLM, 32
# rows, one core: forward 11-12 s, steps 18-23 s; 3 (the textbook guess) left a third of the budget unused.
# An estimate too low is safe: the training rows are cut, or training stops, at the deadline.
STEP_OVER_FORWARD = 2.0
# Pseudo-queries whose labelling is timed when the budget is shared out: several, because labellers batch
# and share texts across queries (one query's list alone overstated the hybrid's cost per pair 2-3 times).
TIMED_QUERIES = 4
__all__ = ["AdaptError", "AdaptSettings", "adapt", "parse_budget"]


def _budget_callback(deadline: float) -> Any:
    from transformers import TrainerCallback

    class StopAtDeadline(TrainerCallback):  # type: ignore[misc]
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if time.perf_counter() > deadline:
                control.should_training_stop = True
                control.should_save = True
                StopAtDeadline.stopped = True
            return control

    return StopAtDeadline()


def _step_seconds(model: Any, columns: dict[str, list[Any]], batch_size: int, kind: str) -> float:
    """A measured estimate of one training step: one forward pass over a batch's texts, times
    ``STEP_OVER_FORWARD`` (forward plus backward plus the optimiser)."""
    import torch

    count = min(batch_size, len(columns["query"]))
    started = time.perf_counter()
    with torch.inference_mode():
        if kind == "bi-encoder":
            model.encode(columns["query"][:count] + columns["positive"][:count] + columns["negative"][:count],
                         batch_size=count * 3, show_progress_bar=False)
        else:
            pairs = list(zip(columns["query"][:count], columns["positive"][:count], strict=True)) + \
                list(zip(columns["query"][:count], columns["negative"][:count], strict=True))
            model.predict(pairs, batch_size=count * 2, show_progress_bar=False)
    return (time.perf_counter() - started) * STEP_OVER_FORWARD


def _train(kind: str, model: Any, columns: dict[str, list[Any]], folder: Path, settings: AdaptSettings,
           deadline: float, callbacks: list[Any] | None) -> dict[str, Any]:
    sentence_transformers = require("sentence_transformers", "train", "Adaptation")
    datasets = require("datasets", "train", "Adaptation")
    require("accelerate", "train", "Adaptation")
    args = BiEncoderTraining(epochs=settings.epochs, batch_size=settings.batch_size,
                             learning_rate=settings.learning_rate, save_steps=settings.save_steps, seed=settings.seed)
    stop = _budget_callback(deadline)
    train = datasets.Dataset.from_dict(columns)
    if kind == "bi-encoder":
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss
        from sentence_transformers.util import pairwise_cos_sim

        arguments = sentence_transformers.SentenceTransformerTrainingArguments(**trainer_arguments(folder, args))
        trainer = sentence_transformers.SentenceTransformerTrainer(
            model=model, args=arguments, train_dataset=train,
            loss=MarginMSELoss(model, similarity_fct=pairwise_cos_sim), callbacks=[stop, *(callbacks or [])])
    else:
        from sentence_transformers.cross_encoder.losses import MarginMSELoss as CrossMarginMSELoss

        arguments = sentence_transformers.cross_encoder.CrossEncoderTrainingArguments(**trainer_arguments(folder, args))
        trainer = sentence_transformers.cross_encoder.CrossEncoderTrainer(
            model=model, args=arguments, train_dataset=train, loss=CrossMarginMSELoss(model),
            callbacks=[stop, *(callbacks or [])])
    resumed = latest_checkpoint(folder)
    if resumed is not None:
        logger.info("resuming from %s", resumed)
    trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
    steps_per_epoch = math.ceil(len(columns["query"]) / settings.batch_size)
    return {"resumed_from": resumed.name if resumed else None, "steps": trainer.state.global_step,
            "planned_steps": steps_per_epoch * settings.epochs, "stopped_by_budget": type(stop).stopped,
            "training_pairs": len(columns["query"])}


# ---------------------------------------------------------------------------------------------- the command

@dataclass
class _Run:
    """What one call of :func:`adapt` has found so far."""

    settings: AdaptSettings
    corpus: str | Path
    output: Path
    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    labels: str = "teacher"
    """The labels used (``settings.labels`` with ``auto`` resolved)."""

    @property
    def deadline(self) -> float:
        return self.started + self.settings.budget_seconds

    def lap(self, name: str, since: float) -> None:
        self.seconds[name] = round(time.perf_counter() - since, 1)


def adapt(corpus: str | Path, output: str | Path, settings: AdaptSettings, *, index: Index | None = None,
          progress: ProgressFactory | None = None, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Adapt ``settings.base`` to ``corpus`` without judgements and write ``output``: ``bi-encoder/``,
    ``reranker/`` (with ``settings.reranker``) and the card ``adapt_card.json`` (also returned)."""
    sentence_transformers = require("sentence_transformers", "train", "Adaptation")
    from rankstack.models.cross_heads import build_segment_cross_encoder

    run = _Run(settings, corpus, Path(output).resolve())
    if run.output.is_dir() and any(run.output.iterdir()) and not (run.output / CARD).is_file():
        raise AdaptError(f"{run.output} exists and is not the output of an earlier adapt run (no {CARD}); "
                         "it would be replaced, so give -o a new or empty directory")
    if not settings.generator:
        check_source(settings.source)
    hybrid_pipeline(settings.hybrid, settings.base)  # refuses an unknown hybrid before any work
    run.labels, teacher_location, teacher_found = choose_labels(settings.labels, settings.teacher)
    if teacher_location is not None:
        check_cross_encoder(teacher_location, settings.teacher or teacher_location)
    base_location = resolve_model_location(settings.base)
    if index is None:
        from rankstack.index.cache import open_or_build

        index, _ = open_or_build(corpus)
    docs, without_text = corpus_documents(index, corpus)
    student = sentence_transformers.SentenceTransformer(base_location, device="cpu")
    lists, reused = _labelled_lists(run, index, docs, teacher_location, student, progress)
    train_lists = [x for x in lists if not x.heldout]
    heldout = [x for x in lists if x.heldout]
    columns, label_scale = training_rows(train_lists, settings.negatives, settings.seed)
    if not columns["query"]:
        raise EmptyInputError("no training pairs: the first stage found no candidates for the pseudo-queries",
                              path=corpus)

    base = sentence_transformers.SentenceTransformer(base_location, device="cpu")
    reranker = build_segment_cross_encoder(base_location, settings.max_length) if settings.reranker else None
    labelled_rows = len(columns["query"])
    needed, check_cost, columns = _check_training_budget(run, student, reranker, columns, len(heldout))
    work = checkpoint_folder(run.output)
    phase = time.perf_counter()
    reserve = check_cost + 5.0
    training: dict[str, Any] = {"bi_encoder": {
        **_train("bi-encoder", student, columns, work / "bi-encoder", settings,
                 run.deadline - reserve - (needed / 2 if reranker is not None else 0.0), callbacks),
        "loss": "MarginMSE on teacher score margins (cosine)", "label_scale": round(label_scale, 4),
        "rows_cut_to_budget": labelled_rows - len(columns["query"])}}
    run.lap("bi_encoder_training", phase)
    if reranker is not None:
        phase = time.perf_counter()
        raw = {**columns, "label": [label * label_scale for label in columns["label"]]}
        training["reranker"] = {**_train("cross-encoder", reranker, raw, work / "reranker", settings,
                                         run.deadline - reserve, callbacks),
                                "loss": "MarginMSE on raw teacher score margins",
                                "start": canonical_model_id(settings.base)}
        run.lap("reranker_training", phase)
    phase = time.perf_counter()
    check = self_check(base, student, reranker, heldout, settings)
    run.lap("self_check", phase)
    card = _card(run, lists, len(docs), len(without_text), (teacher_location, teacher_found), training, check,
                 reused)
    _save(run.output, student, reranker, card)
    return card


def _labelled_lists(run: _Run, index: Index, docs: list[Any], teacher_location: str | None, student: Any,
                    progress: ProgressFactory | None) -> tuple[list[LabelledList], bool]:
    """The lists an interrupted earlier run with the same data settings saved, else new ones (as many as the
    budget allows, or ``settings.queries``, timed first against the budget). Returns (lists, reused)."""
    settings, work = run.settings, checkpoint_folder(run.output)
    lists = saved_lists(work, settings.data_fingerprint())
    if lists is not None:
        return lists, True
    phase = time.perf_counter()
    # the hybrid's vectors first (encoding a large corpus takes a while), so the budget left is known when sizing
    parse_pipeline(hybrid_pipeline(settings.hybrid, settings.base), index).prepare(progress)
    teacher = load_teacher(teacher_location, settings.max_length) if teacher_location is not None else None
    labeller = make_labeller(run.labels, index, teacher, student)
    count = _query_count(run, docs, labeller, student)
    queries = make_queries(docs, settings, count)
    if len(queries) < 20:
        raise EmptyInputError(f"only {len(queries)} pseudo-queries could be made with source "
                              f"'{'generated' if settings.generator else settings.source}' (documents without "
                              "titles, or too short); try --source sentence or keywords", path=run.corpus)
    run.lap("pseudo_queries", phase)
    phase = time.perf_counter()
    lists = label_lists(index, queries, labeller, settings, progress)
    save_lists(work, settings.data_fingerprint(), lists)
    run.lap("mining_and_labelling", phase)
    return lists, False


def _query_count(run: _Run, docs: list[Any], labeller: Labeller, student: Any) -> int:
    """How many documents give pseudo-queries: ``settings.queries`` when given (refused when its labelling
    alone would overrun the budget), else as many as the budget allows on this machine, measured: the
    labelling timed on a few lists and a training step estimated from a timed forward pass, 80% of what is
    left of the budget shared between labelling and one epoch (the rest for the self-check and saving)."""
    settings = run.settings
    sample = random.Random(settings.seed).sample(docs, min(len(docs), max(settings.batch_size, 16)))
    # stand-ins for pseudo-queries and their candidates: a document's opening words against whole documents
    columns = {"query": [" ".join(d.contents.split()[:12]) for d in sample], "positive": [d.contents for d in sample],
               "negative": [d.contents for d in sample[1:] + sample[:1]]}
    # each query's 16 candidates from a pool of 32 texts, each text in two lists (about the sharing measured)
    pool = [d.contents for d in sample]
    groups = [(query, (pool[8 * k:] + pool[:8 * k])[:16]) for k, query in enumerate(columns["query"][:TIMED_QUERIES])]
    timed = time.perf_counter()
    labeller(groups, None)
    per_pair = (time.perf_counter() - timed) / sum(len(texts) for _, texts in groups)
    if settings.queries:
        labelling = per_pair * min(settings.queries, len(docs)) * settings.depth
        if time.perf_counter() + labelling > run.deadline:
            raise AdaptError(f"a budget of {settings.budget_seconds:.0f} s is too short: scoring "
                             f"{settings.queries * settings.depth:,} candidates alone takes about "
                             f"{labelling:.0f} s here; give a longer --budget or fewer --queries")
        return settings.queries
    step = _step_seconds(student, columns, settings.batch_size, "bi-encoder")
    if settings.reranker:  # the reranker trains on the same rows after the bi-encoder: its own step, timed
        from rankstack.models.cross_heads import build_segment_cross_encoder

        reranker = build_segment_cross_encoder(resolve_model_location(settings.base), settings.max_length)
        step += _step_seconds(reranker, columns, settings.batch_size, "cross-encoder")
        del reranker
    per_query = settings.depth * per_pair + \
        (1 - settings.heldout) * settings.negatives * settings.epochs / settings.batch_size * step
    available = 0.8 * (run.deadline - time.perf_counter())
    count = min(MAX_AUTO_QUERIES, len(docs), int(available / per_query))
    logger.info("budget: %.2f s per pair to label, %.1f s per training step: %d pseudo-queries", per_pair, step, count)
    if count < MIN_AUTO_QUERIES:
        enough = math.ceil((settings.budget_seconds + (MIN_AUTO_QUERIES - max(count, 0)) * per_query / 0.8) / 60)
        raise AdaptError(f"a budget of {settings.budget_seconds:.0f} s is too short: labelling and training one "
                         f"pseudo-query takes about {per_query:.1f} s here, so only {max(count, 0)} fit, fewer than "
                         f"the {MIN_AUTO_QUERIES} worth training on; give --budget {enough}m or more")
    return count


def _check_training_budget(run: _Run, student: Any, reranker: Any | None, columns: dict[str, list[Any]],
                           heldout: int) -> tuple[float, float, dict[str, list[Any]]]:
    """Refuse a budget that cannot finish one epoch; returns (training seconds, self-check seconds) estimated
    and the training rows. When the command sized the pseudo-query count itself (``queries`` None) and the
    epoch turns out not to fit (the labelling took longer than timed), the rows are cut to what fits
    instead: refusing its own choice after the labelling is done would waste it."""
    settings = run.settings
    step = _step_seconds(student, columns, settings.batch_size, "bi-encoder")
    if reranker is not None:
        step += _step_seconds(reranker, columns, settings.batch_size, "cross-encoder")
    # the self-check encodes each held-out query and its candidates with two models, forward only; a timed
    # step covered 3 x batch_size texts, forward counted once of its three parts
    check_cost = step / 3 * heldout * (settings.depth + 1) / (3 * settings.batch_size) * 2
    steps = math.ceil(len(columns["query"]) / settings.batch_size) * settings.epochs
    remaining = run.deadline - time.perf_counter()
    if step * steps + check_cost <= remaining:
        return step * steps, check_cost, columns
    fitting = int((remaining - check_cost) / step / settings.epochs) * settings.batch_size
    # rows come ``negatives`` to a pseudo-query, grouped by it: cut at a query's end, and count queries
    fitting -= fitting % settings.negatives
    if settings.queries is None and fitting // settings.negatives >= MIN_AUTO_QUERIES:
        logger.warning("the labelling took longer than timed: training on the first %d of %d rows (%d pseudo-queries),"
                       " which fit the budget", fitting, len(columns["query"]), fitting // settings.negatives)
        cut = {name: values[:fitting] for name, values in columns.items()}
        return step * math.ceil(fitting / settings.batch_size) * settings.epochs, check_cost, cut
    enough = math.ceil((settings.budget_seconds - remaining + step * steps + check_cost) / 60)
    raise AdaptError(f"a budget of {settings.budget_seconds:.0f} s is too short to finish one epoch: "
                     f"{steps:,} training steps take about {step * steps:.0f} s here and {remaining:.0f} s are left "
                     f"(the labelled lists are kept in {checkpoint_folder(run.output)}, so a rerun starts "
                     f"training at once); give --budget {enough}m or more, or fewer --queries")


def _card(run: _Run, lists: list[LabelledList], with_text: int, without_text: int, teacher: tuple[str | None, str],
          training: dict[str, Any], check: dict[str, Any], reused: bool) -> dict[str, Any]:
    settings = run.settings
    return {"kind": "adapt", "corpus": str(Path(run.corpus).resolve()), "documents": with_text + without_text,
            "documents_without_text": without_text,
            "pseudo_queries": {"source": "generated" if settings.generator else settings.source,
                               "generator": settings.generator, "made": len(lists),
                               "train": sum(not x.heldout for x in lists), "heldout": sum(x.heldout for x in lists),
                               "sentence_removed": sum(x.query.removed for x in lists)},
            "first_stage": hybrid_pipeline(settings.hybrid, settings.base), "candidates_per_query": settings.depth,
            "teacher": {"model": settings.teacher or teacher[0], "location": teacher[0], "resolved": teacher[1],
                        "labels": run.labels, "pairs_scored": sum(len(x.doc_ids) for x in lists)},
            "base": canonical_model_id(settings.base), "training": {"reranker": None, **training},
            "parameters": asdict(settings), "self_check": check,
            "suggested_pipeline": suggested_pipeline(check, settings, run.output), "reused_labelled_lists": reused,
            "seconds": {**run.seconds, "total": round(time.perf_counter() - run.started, 1)}}


def _save(output: Path, student: Any, reranker: Any | None, card: dict[str, Any]) -> None:
    """Everything into a staging folder, then swapped into place; the checkpoints go last."""
    staging = output.parent / f".{output.name}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    student.save(str(staging / "bi-encoder"))
    if reranker is not None:
        reranker.save(str(staging / "reranker"))
    (staging / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    shutil.rmtree(checkpoint_folder(output), ignore_errors=True)


