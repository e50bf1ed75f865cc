"""Zero-label domain adaptation (``rankstack adapt``): a corpus in, an adapted bi-encoder (and optionally a
reranker) plus a card out, with no relevance judgements.

1. Pseudo-queries from the documents (``pseudo_queries.py``, or a generator from ``generators.py``).
2. Candidates for each from the hybrid first stage (``rrf(bm25,dense)``, or the z-score linear hybrid).
3. A teacher cross-encoder scores every (query, candidate) pair.
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

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstack.errors import EmptyInputError, ModelLoadError, RankstackError
from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.models.loading import (
    SPLIT_CONFIG,
    canonical_model_id,
    require,
    resolve_model_location,
)
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.train._run import checkpoint_folder, latest_checkpoint, trainer_arguments
from rankstack.train.arguments import BiEncoderTraining
from rankstack.train.pseudo_queries import DEFAULT_SOURCE, PseudoQuery, check_source, make_pseudo_queries
from rankstack.types import Doc, Qrel, Query, Run

logger = logging.getLogger(__name__)

MIN_DOCUMENTS = 200
HYBRIDS = ("rrf", "zscore")
CARD = "adapt_card.json"
# Teachers tried, best first, when --teacher is not given: only ones already on disk (the Hugging Face
# cache) are used, so the default never reaches the network.
TEACHER_CANDIDATES = ("BAAI/bge-reranker-base", "cross-encoder/ms-marco-MiniLM-L12-v2",
                      "cross-encoder/ms-marco-MiniLM-L6-v2")
SELF_CHECK = "nDCG@10 against the teacher's ranking as graded labels (teacher rank 1: 3, 2-3: 2, 4-10: 1)"
ProgressFactory = Callable[[str, int], Callable[[int], None]]


class AdaptError(RankstackError):
    """Adaptation cannot run as asked (a budget too short, no teacher available)."""


@dataclass(frozen=True, kw_only=True)
class AdaptSettings:
    """Arguments of :func:`adapt`; the CLI's defaults."""

    teacher: str | None = None
    """A cross-encoder (local directory or Hugging Face id); None: the best cached one (TEACHER_CANDIDATES)."""
    base: str = "default"
    """The bi-encoder adapted (and the dense half of the hybrid)."""
    source: str = DEFAULT_SOURCE
    generator: str | None = None
    generator_model: str = "default"
    queries: int = 1000
    heldout: float = 0.1
    depth: int = 16
    negatives: int = 4
    hybrid: str = "rrf"
    """Data: what of a document is its query (or a generator's query), how many documents give one, the
    share held out for the self-check, candidates per query, candidates trained on per query, the hybrid."""
    budget_seconds: float = 1800.0
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    max_length: int = 256
    save_steps: int = 50
    seed: int = 42
    reranker: bool = False
    min_gain: float = 0.0
    """Optimisation: the whole command's time budget; the reranker's window; ``min_gain``: how much the
    adapted model must agree better with the teacher than the unadapted one to be recommended."""

    def data_fingerprint(self) -> str:
        keys = ("teacher", "base", "source", "generator", "generator_model", "queries", "heldout", "depth", "hybrid",
                "seed", "max_length")
        return hashlib.sha1(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def parse_budget(text: str) -> float:
    """Seconds in ``30m``, ``90s``, ``1h30m``, ``1.5h`` or a plain number of seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise RankstackError(f"cannot read the budget {text!r}; write it like 30m, 90s, 1h30m or 1.5h")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# ---------------------------------------------------------------------------------------------- teacher

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


def _score_pairs(model: Any, pairs: list[tuple[str, str]], batch_size: int = 32,
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


# ---------------------------------------------------------------------------------------------- data

@dataclass
class LabelledList:
    """A pseudo-query, its candidates (its source document first) and the teacher's score of each."""

    query: PseudoQuery
    doc_ids: list[str]
    texts: list[str]
    scores: list[float]
    heldout: bool

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query.to_json(), "doc_ids": self.doc_ids, "texts": self.texts, "scores": self.scores,
                "heldout": self.heldout}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> LabelledList:
        return cls(PseudoQuery.from_json(row["query"]), row["doc_ids"], row["texts"], row["scores"], row["heldout"])


def hybrid_pipeline(hybrid: str, base: str) -> str:
    dense = "dense" if canonical_model_id(base) == canonical_model_id("default") else f"dense(model={base})"
    if hybrid == "rrf":
        return f"rrf(bm25,{dense})"
    if hybrid == "zscore":
        return f"linear(bm25,{dense},norm=zscore)"
    raise RankstackError(f"unknown hybrid {hybrid!r}; pass --hybrid {' or '.join(HYBRIDS)}")


def corpus_documents(index: Index, corpus: str | Path) -> tuple[list[Doc], list[str]]:
    """The documents with text, and the ids of those without; refuses a corpus too small to adapt."""
    view = index.view()
    ids = sorted(view.doc_positions)
    if len(ids) < MIN_DOCUMENTS:
        raise EmptyInputError(f"{len(ids)} documents; adapt needs at least {MIN_DOCUMENTS} to make pseudo-queries "
                              "from. Use the bundled model as it is (pipeline 'rrf(bm25,dense)'), or judge a few "
                              "queries and use `rankstack train`", path=corpus)
    docs = view.get_docs(ids)
    with_text = [docs[d] for d in ids if len(docs[d].text.split()) >= 3]
    without = [d for d in ids if len(docs[d].text.split()) < 3]
    if len(with_text) < MIN_DOCUMENTS:
        raise EmptyInputError(f"{len(without)} of {len(ids)} documents have no text (fewer than 3 words, e.g. "
                              f"{', '.join(without[:3])}); adapt needs at least {MIN_DOCUMENTS} with text. Fill "
                              "the documents' 'text' field (a title alone is not enough)", path=corpus)
    if without:
        logger.warning("%d documents have no text and give no pseudo-queries (e.g. %s)", len(without),
                       ", ".join(without[:3]))
    return with_text, without


def _make_queries(docs: list[Doc], settings: AdaptSettings) -> list[PseudoQuery]:
    rng = random.Random(settings.seed)
    chosen = rng.sample(docs, min(len(docs), settings.queries))
    if settings.generator:
        from rankstack.train.generators import load_generator

        generate = load_generator(settings.generator, settings.seed, settings.generator_model)
        return make_pseudo_queries(chosen, "generated", settings.seed, generate=generate)
    sample = rng.sample(docs, min(len(docs), 20_000))
    return make_pseudo_queries(chosen, settings.source, settings.seed, corpus_sample=sample)


def label_lists(index: Index, queries: list[PseudoQuery], teacher: Any, settings: AdaptSettings,
                progress: ProgressFactory | None = None) -> list[LabelledList]:
    """Mine each query's candidates with the hybrid, put its source document first, score all with the teacher."""
    pipeline = parse_pipeline(f"{hybrid_pipeline(settings.hybrid, settings.base)}%{settings.depth}", index)
    pipeline.prepare(progress)
    mined = pipeline.transform([Query(q.query_id, q.text) for q in queries], context=SearchContext())
    others = {q.query_id: [h.doc_id for h in mined[q.query_id] if h.doc_id != q.doc_id][:settings.depth - 1]
              for q in queries}
    texts = index.view().get_docs(sorted({d for ids in others.values() for d in ids}))
    kept = [q for q in queries if others[q.query_id]]
    pairs = [(q.text, t) for q in kept for t in [q.document, *(texts[d].contents for d in others[q.query_id])]]
    advance = progress("scoring candidates with the teacher", len(pairs)) if progress else None
    scores = _score_pairs(teacher, pairs, advance=advance).tolist()
    heldout_count = max(1, round(len(kept) * settings.heldout)) if settings.heldout > 0 else 0
    heldout = set(random.Random(settings.seed + 1).sample([q.query_id for q in kept], min(heldout_count, len(kept))))
    lists, position = [], 0
    for q in kept:
        ids = [q.doc_id, *others[q.query_id]]
        lists.append(LabelledList(q, ids, [q.document, *(texts[d].contents for d in others[q.query_id])],
                                  scores[position:position + len(ids)], q.query_id in heldout))
        position += len(ids)
    return lists


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _saved_lists(folder: Path, fingerprint: str) -> list[LabelledList] | None:
    plan, lists = folder / "plan.json", folder / "lists.jsonl"
    if not (plan.is_file() and lists.is_file()):
        return None
    if json.loads(plan.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
        logger.warning("%s was made with other settings; starting over", folder)
        shutil.rmtree(folder)
        return None
    return [LabelledList.from_json(json.loads(line)) for line in lists.read_text(encoding="utf-8").splitlines()]


def _save_lists(folder: Path, fingerprint: str, lists: list[LabelledList]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "lists.jsonl", "".join(json.dumps(x.to_json()) + "\n" for x in lists))
    _write_atomic(folder / "plan.json", json.dumps({"fingerprint": fingerprint}) + "\n")


def training_rows(lists: Sequence[LabelledList], negatives: int, seed: int) -> tuple[dict[str, list[Any]], float]:
    """(query, positive, negative, label) columns: the source document against ``negatives`` sampled
    candidates, labelled with the teacher's score margin divided by a scale (returned) that brings the
    teacher's margins to the range of cosine differences."""
    rng = random.Random(seed)
    every = [s for x in lists for s in x.scores]
    scale = max(float(np.std(every)) * 4.0, 1e-6) if every else 1.0
    columns: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
    for x in lists:
        picked = rng.sample(range(1, len(x.doc_ids)), min(negatives, len(x.doc_ids) - 1))
        for k in picked:
            columns["query"].append(x.query.text)
            columns["positive"].append(x.texts[0])
            columns["negative"].append(x.texts[k])
            columns["label"].append((x.scores[0] - x.scores[k]) / scale)
    return columns, scale


# ---------------------------------------------------------------------------------------------- self-check

def teacher_grades(scores: Sequence[float]) -> list[int]:
    """Grades from the teacher's ranking of one list: rank 1 -> 3, ranks 2-3 -> 2, ranks 4-10 -> 1, else 0."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    grades = [0] * len(scores)
    for rank, i in enumerate(order):
        grades[i] = 3 if rank == 0 else 2 if rank < 3 else 1 if rank < 10 else 0
    return grades


def agreement(lists: Sequence[LabelledList], predicted: Sequence[Sequence[float]]) -> float:
    """Mean nDCG@10 of the predicted orderings against the teacher's grades."""
    run = Run.from_scores({x.query.query_id: dict(zip(x.doc_ids, map(float, p), strict=True))
                           for x, p in zip(lists, predicted, strict=True)})
    qrels = [Qrel(x.query.query_id, d, g) for x in lists for d, g in zip(x.doc_ids, teacher_grades(x.scores),
                                                                          strict=True) if g > 0]
    return float(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"])


def teacher_agreement(model: Any, kind: str, lists: Sequence[LabelledList]) -> float:
    """The self-check estimate of a bi-encoder (``kind`` "bi-encoder") or cross-encoder on held-out lists."""
    if not lists:
        return float("nan")
    if kind == "bi-encoder":
        queries = model.encode([x.query.text for x in lists], normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        predicted = []
        for x, vector in zip(lists, queries, strict=True):
            docs = model.encode(x.texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            predicted.append((docs @ vector).tolist())
    else:
        predicted = [_score_pairs(model, [(x.query.text, t) for t in x.texts]).tolist() for x in lists]
    return agreement(lists, predicted)


# ---------------------------------------------------------------------------------------------- training

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
    """A measured estimate of one training step: one forward pass over a batch's texts, times three
    (forward plus backward plus the optimiser)."""
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
    return (time.perf_counter() - started) * 3.0


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

def adapt(corpus: str | Path, output: str | Path, settings: AdaptSettings, *, index: Index | None = None,
          progress: ProgressFactory | None = None, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Adapt ``settings.base`` to ``corpus`` without judgements and write ``output``: ``bi-encoder/``,
    ``reranker/`` (with ``settings.reranker``) and the card ``adapt_card.json`` (also returned)."""
    sentence_transformers = require("sentence_transformers", "train", "Adaptation")
    from rankstack.models.cross_heads import build_segment_cross_encoder, load_cross_encoder

    started = time.perf_counter()
    deadline = started + settings.budget_seconds
    output = Path(output).resolve()
    if not settings.generator:
        check_source(settings.source)
    hybrid_pipeline(settings.hybrid, settings.base)  # refuses an unknown hybrid before any work
    teacher_location, teacher_found = resolve_teacher(settings.teacher)
    check_cross_encoder(teacher_location, settings.teacher or teacher_location)
    base_location = resolve_model_location(settings.base)
    if index is None:
        from rankstack.index.cache import open_or_build

        index, _ = open_or_build(corpus)
    docs, without_text = corpus_documents(index, corpus)
    work = checkpoint_folder(output)
    fingerprint = settings.data_fingerprint()
    seconds: dict[str, float] = {}

    try:
        teacher = load_cross_encoder(teacher_location, settings.max_length)
    except RankstackError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
        raise ModelLoadError(f"{teacher_location}: could not load the teacher as a cross-encoder "
                             f"({str(error)[:200]}); give a cross-encoder directory or Hugging Face id") from None
    lists = _saved_lists(work, fingerprint)
    reused = lists is not None
    if lists is None:
        phase = time.perf_counter()
        queries = _make_queries(docs, settings)
        if len(queries) < 20:
            raise EmptyInputError(f"only {len(queries)} pseudo-queries could be made with source "
                                  f"'{settings.generator and 'generated' or settings.source}' (documents "
                                  "without titles, or too short); try --source sentence or keywords", path=corpus)
        probe = _score_timing(teacher, queries[0].text, [d.contents for d in docs[:16]])
        labelling = probe * len(queries) * settings.depth
        if time.perf_counter() + labelling > deadline:
            raise AdaptError(f"a budget of {settings.budget_seconds:.0f} s is too short: scoring "
                             f"{len(queries) * settings.depth:,} candidates with the teacher alone takes about "
                             f"{labelling:.0f} s here; give a longer --budget or fewer --queries")
        seconds["pseudo_queries"] = round(time.perf_counter() - phase, 1)
        phase = time.perf_counter()
        lists = label_lists(index, queries, teacher, settings, progress)
        _save_lists(work, fingerprint, lists)
        seconds["mining_and_labelling"] = round(time.perf_counter() - phase, 1)
    train_lists = [x for x in lists if not x.heldout]
    heldout_lists = [x for x in lists if x.heldout]
    columns, label_scale = training_rows(train_lists, settings.negatives, settings.seed)
    if not columns["query"]:
        raise EmptyInputError("no training pairs: the first stage found no candidates for the pseudo-queries",
                              path=corpus)

    base = sentence_transformers.SentenceTransformer(base_location, device="cpu")
    student = sentence_transformers.SentenceTransformer(base_location, device="cpu")
    reranker = build_segment_cross_encoder(base_location, settings.max_length) if settings.reranker else None
    step = _step_seconds(student, columns, settings.batch_size, "bi-encoder")
    steps = math.ceil(len(columns["query"]) / settings.batch_size) * settings.epochs
    needed = step * steps
    if reranker is not None:
        needed += _step_seconds(reranker, columns, settings.batch_size, "cross-encoder") * steps
    check_cost = step / 3 * (len(heldout_lists) * settings.depth / max(settings.batch_size, 1)) * 2
    remaining = deadline - time.perf_counter()
    if needed + check_cost > remaining:
        raise AdaptError(f"a budget of {settings.budget_seconds:.0f} s is too short to finish one epoch: "
                         f"{steps:,} training steps take about {needed:.0f} s here and {remaining:.0f} s are left "
                         f"(the labelled lists are kept in {work}, so a rerun starts training at once); give "
                         f"--budget {math.ceil((settings.budget_seconds - remaining + needed + check_cost) / 60)}m "
                         "or more, or fewer --queries")

    phase = time.perf_counter()
    reserve = check_cost + 5.0
    trained = _train("bi-encoder", student, columns, work / "bi-encoder", settings,
                     deadline - reserve - (needed / 2 if reranker is not None else 0.0), callbacks)
    seconds["bi_encoder_training"] = round(time.perf_counter() - phase, 1)
    reranker_trained = None
    if reranker is not None:
        phase = time.perf_counter()
        reranker_columns = {**columns, "label": [label * label_scale for label in columns["label"]]}
        reranker_trained = _train("cross-encoder", reranker, reranker_columns, work / "reranker", settings,
                                  deadline - reserve, callbacks)
        seconds["reranker_training"] = round(time.perf_counter() - phase, 1)

    phase = time.perf_counter()
    check = self_check(base, student, reranker, heldout_lists, settings)
    seconds["self_check"] = round(time.perf_counter() - phase, 1)
    pipeline = suggested_pipeline(check, settings, output)
    card = {"kind": "adapt", "corpus": str(Path(corpus).resolve()), "documents": len(docs) + len(without_text),
            "documents_without_text": len(without_text),
            "pseudo_queries": {"source": "generated" if settings.generator else settings.source,
                               "generator": settings.generator, "made": len(lists),
                               "train": len(train_lists), "heldout": len(heldout_lists),
                               "sentence_removed": sum(x.query.removed for x in lists)},
            "first_stage": hybrid_pipeline(settings.hybrid, settings.base), "candidates_per_query": settings.depth,
            "teacher": {"model": settings.teacher or teacher_location, "location": teacher_location,
                        "resolved": teacher_found, "pairs_scored": sum(len(x.doc_ids) for x in lists)},
            "base": canonical_model_id(settings.base),
            "training": {"bi_encoder": {**trained, "loss": "MarginMSE on teacher score margins (cosine)",
                                        "label_scale": round(label_scale, 4)},
                         "reranker": reranker_trained and {
                             **reranker_trained, "loss": "MarginMSE on raw teacher score margins",
                             "start": canonical_model_id(settings.base)}},
            "parameters": {k: v for k, v in asdict(settings).items() if k not in ("teacher",)},
            "self_check": check, "suggested_pipeline": pipeline,
            "reused_labelled_lists": reused, "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)}}
    _save(output, student, reranker, card)
    return card


def _score_timing(teacher: Any, query: str, texts: list[str]) -> float:
    started = time.perf_counter()
    _score_pairs(teacher, [(query, t) for t in texts], batch_size=len(texts))
    return (time.perf_counter() - started) / max(len(texts), 1)


def self_check(base: Any, student: Any, reranker: Any | None, heldout: Sequence[LabelledList],
               settings: AdaptSettings) -> dict[str, Any]:
    """The label-free estimates and the decision drawn from them (see the module's docstring)."""
    base_score = teacher_agreement(base, "bi-encoder", heldout)
    adapted = teacher_agreement(student, "bi-encoder", heldout)
    check: dict[str, Any] = {"measure": SELF_CHECK, "heldout_queries": len(heldout),
                             "base": round(base_score, 4), "adapted": round(adapted, 4)}
    if not heldout or math.isnan(base_score) or math.isnan(adapted):
        check.update(recommend_bi_encoder=False, reason="no held-out pseudo-queries to check the adapted model on; "
                     "the unadapted model is suggested")
    elif adapted >= base_score + settings.min_gain:
        check.update(recommend_bi_encoder=True, reason=f"the adapted bi-encoder agrees with the teacher at least as "
                     f"well as the unadapted one ({adapted:.4f} >= {base_score:.4f} + {settings.min_gain})")
    else:
        check.update(recommend_bi_encoder=False, reason=f"the adapted bi-encoder agrees with the teacher less than "
                     f"the unadapted one ({adapted:.4f} < {base_score:.4f} + {settings.min_gain}); it is saved but "
                     "not recommended, and the suggested pipeline keeps the unadapted model")
    if reranker is not None:
        reranked = teacher_agreement(reranker, "cross-encoder", heldout)
        first = adapted if check["recommend_bi_encoder"] else base_score
        check["reranker"] = round(reranked, 4)
        check["recommend_reranker"] = bool(heldout) and not math.isnan(reranked) and reranked > first
        check["reranker_reason"] = (f"the reranker agrees with the teacher better than the first stage's model "
                                    f"({reranked:.4f} > {first:.4f})" if check["recommend_reranker"] else
                                    f"the reranker does not agree with the teacher better than the first stage's "
                                    f"model ({reranked:.4f} <= {first:.4f}); it is saved but not in the pipeline")
    return check


def suggested_pipeline(check: dict[str, Any], settings: AdaptSettings, output: Path) -> str:
    model = str(output / "bi-encoder") if check["recommend_bi_encoder"] else settings.base
    pipeline = hybrid_pipeline(settings.hybrid, model)
    if check.get("recommend_reranker"):
        pipeline = f"{pipeline}%100>>cross_encoder(model={output / 'reranker'})"
    return pipeline


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


