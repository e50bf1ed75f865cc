"""Splitting a trained cross-encoder: its lower layers learn to read query and document apart (so the
document side can be computed before any query), distilled from the unsplit model.

The student starts as an exact copy of the teacher; only the attention of its lower layers is
restricted to each segment, and documents move to fixed positions. It then learns the teacher's score
differences over every pair of documents in each training list (MarginMSE, Hofstätter et al., 2020,
taken over all pairs of a list rather than positive-negative pairs only).

Unlike layer dropping, no weights are removed, so the student keeps the teacher's capacity: on SciFact
(dev nDCG@10, reranking bm25%30) a 3-of-6 split scores 0.68 before any training, 3-layer students 0.41-0.53.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from rankstack.errors import RankstackError
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.cross_heads import load_cross_encoder
from rankstack.models.encoder import precision_context, resolve_precision
from rankstack.models.loading import is_split_cross_encoder, require, resolve_model_location
from rankstack.models.split import SplitCrossEncoder, SplitLayout
from rankstack.train._run import checkpoint_folder, latest_checkpoint, save_with_card
from rankstack.train.cross_encoder import dev_reranking
from rankstack.train.data import check_pseudo_query_source, dev_qrels, mine_examples, pseudo_query_lists

logger = logging.getLogger(__name__)

TrainingList = tuple[str, list[str], torch.Tensor]  # query, documents, the teacher's scores for them


def all_pairs_margin_mse(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's score differences over every ordered
    pair of one list; blind to a shift of all scores, like MarginMSE."""
    mine = scores[:, None] - scores[None, :]
    theirs = reference[:, None] - reference[None, :]
    return ((mine - theirs) ** 2).sum() / max(1, scores.numel() * (scores.numel() - 1))


def hidden_state_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
    """Squared error between the student's and the teacher's token states, relative to the teacher's
    (so each layer weighs the same whatever its scale), over valid tokens, averaged over layers."""
    mask = valid[..., None].float()
    losses = [((s.float() - t.float()) ** 2 * mask).sum() / (t.float() ** 2 * mask).sum().clamp(min=1e-12)
              for s, t in zip(student, teacher, strict=True)]
    return torch.stack(losses).mean()


def _teacher_states(encoder: Any, inputs: dict[str, torch.Tensor], first_layer: int) -> list[torch.Tensor]:
    """The unsplit teacher's outputs of layer ``first_layer`` and every later one, on the student's rows
    (positions counted on from the query, as the teacher was trained)."""
    with torch.no_grad():
        out = encoder(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"],
                      attention_mask=inputs["valid"].long(), output_hidden_states=True)
    return list(out.hidden_states[first_layer:])


def without_attention_dropout(encoder: Any) -> int:
    """Turn off dropout on attention probabilities (hidden-state dropout stays); returns how many layers
    changed. On CPU it pushes attention off its fused kernel: a training step took 2.1 s with it and
    0.9 s without (MiniLM-L6, 16 x 250 tokens, 2 cores), and distillation has the teacher's targets to
    keep it from overfitting."""
    changed = 0
    for module in encoder.modules():
        if type(module).__name__.endswith("SelfAttention") and isinstance(getattr(module, "dropout", None),
                                                                          torch.nn.Dropout):
            module.dropout.p = 0.0
            if hasattr(module, "dropout_prob"):  # what older transformers hand to SDPA
                module.dropout_prob = 0.0
            changed += 1
    return changed


def _teacher_lists(teacher: Any, examples: list[tuple[str, str, tuple[str, ...]]], precision: str,
                   progress: Any) -> list[TrainingList]:
    lists = []
    with torch.inference_mode(), precision_context(precision):
        for query, positive, negatives in progress(examples, "teacher scoring lists"):
            documents = [positive, *negatives]
            scores = teacher.predict([(query, d) for d in documents], batch_size=32, show_progress_bar=False,
                                     convert_to_numpy=True).reshape(len(documents), -1)[:, -1]
            lists.append((query, documents, torch.tensor(scores, dtype=torch.float32)))
    return lists


def _tqdm(items: list[Any], description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=description)


class _Checkpoints:
    """Model, optimiser, schedule and step every ``every`` steps, written whole or not at all; the two
    newest are kept. Teacher scores are saved once, so a resumed run does not score again. The run's
    arguments are saved too: resuming with other ones would mix two runs, so it is refused."""

    def __init__(self, folder: Path, every: int) -> None:
        if every < 1:
            raise RankstackError(f"save_steps must be at least 1, got {every}")
        self.folder, self.every = folder, every

    def claim(self, arguments: dict[str, Any], added: dict[str, Any] | None = None) -> None:
        """``added``: arguments newer than some saved runs, with the value those runs implicitly had."""
        path = self.folder / "arguments.json"
        if path.is_file():
            saved = {**(added or {}), **json.loads(path.read_text(encoding="utf-8"))}
            if saved != arguments:
                changed = sorted(k for k in arguments.keys() | saved.keys() if saved.get(k) != arguments.get(k))
                raise RankstackError(f"{self.folder} holds an interrupted run with other arguments "
                                     f"({', '.join(changed)} differ); rerun with the same arguments to resume it, "
                                     f"or delete that folder to start afresh")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(arguments, indent=2) + "\n", encoding="utf-8")

    def teacher_lists(self) -> list[TrainingList] | None:
        path = self.folder / "teacher_lists.pt"
        return torch.load(path, weights_only=False) if path.is_file() else None

    def save_teacher_lists(self, lists: list[TrainingList]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(lists, self.folder / "teacher_lists.pt.tmp")
        (self.folder / "teacher_lists.pt.tmp").replace(self.folder / "teacher_lists.pt")

    def save(self, step: int, state: dict[str, Any]) -> None:
        staging = self.folder / f".checkpoint-{step}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(state, staging / "state.pt")
        staging.rename(self.folder / f"checkpoint-{step}")
        for old in sorted(self.folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
            shutil.rmtree(old)


def train_split_cross_encoder(teacher_model: str, dataset_dir: str | Path, output: str | Path, index: Index,
                              local_layers: int = 3, query_tokens: int = 64, document_tokens: int = 224,
                              split: str = "train",
                              epochs: int = 1, list_size: int = 16, learning_rate: float = 5e-5, seed: int = 42,
                              miner: str = "bm25%30", dev_fraction: float = 0.1, save_steps: int = 100,
                              max_steps: int = -1, precision: str = "auto", pseudo_queries: int = 0,
                              pseudo_query_source: str = "title", hidden_weight: float = 1.0,
                              init: str | None = None, prune: bool = False, query_reads_document: bool = False,
                              on_step: Any = None) -> dict[str, Any]:
    """Train a split cross-encoder from ``teacher_model``; resumes from the newest checkpoint of an
    interrupted run. ``on_step(step)`` is called after each optimiser step (for tests and progress).

    ``hidden_weight`` weighs a second loss next to the score margins: the student's token states at the
    last split layer and every joint layer against the unsplit teacher's on the same tokens (in the
    spirit of TinyBERT / MiniLM), a far richer signal per list than its 16 scores. ``init`` starts the
    student from a split model trained before (same layout) instead of a copy of the teacher: a second
    round of distillation, on more lists or at a lower learning rate; it may have been split with the
    query reading the document or not (``query_reads_document`` says how the student will be)."""
    require("transformers", "train", "Split cross-encoder training")
    check_pseudo_query_source(pseudo_query_source)
    started = time.perf_counter()
    output, precision = Path(output), resolve_precision(precision)
    if precision == "int8":
        precision = "fp32"  # int8 is an inference format; training runs in full precision
    teacher = load_cross_encoder(str(resolve_model_location(teacher_model)))
    layout = SplitLayout(local_layers, query_tokens, document_tokens, prune, query_reads_document)
    if init:
        init = str(resolve_model_location(init))
        if not is_split_cross_encoder(init):
            raise RankstackError(f"--init {init} is not a split cross-encoder (rankstack train split writes one); "
                                 f"leave --init out to start from a copy of the teacher")
        student = SplitCrossEncoder.load(init)
        # whether the query reads the document changes attention masks only, not weights
        student.layout = replace(student.layout, query_reads_document=query_reads_document)
        if student.layout != layout:
            raise RankstackError(f"{init} was split as {asdict(student.layout)}, not {asdict(layout)}; "
                                 f"pass the same --local-layers, --query-tokens, --document-tokens and "
                                 f"--prune-stopwords")
        shape = ("num_hidden_layers", "hidden_size", "vocab_size")
        if [getattr(student.encoder.config, k) for k in shape] != [getattr(teacher[0].model.config, k) for k in shape]:
            raise RankstackError(f"{init} is not a split of {teacher_model}: their {', '.join(shape)} differ")
    else:
        student = SplitCrossEncoder.from_cross_encoder(teacher, layout)
    without_attention_dropout(student.encoder)
    dataset = BeirDataset.open(dataset_dir)
    data = mine_examples(dataset, index, split, miner, negatives_per_positive=list_size - 1,
                         dev_fraction=dev_fraction, seed=seed)
    examples = data.examples + (pseudo_query_lists(index, pseudo_queries, miner, list_size, seed,
                                                   pseudo_query_source) if pseudo_queries else [])
    checkpoints = _Checkpoints(checkpoint_folder(output), save_steps)
    # query_reads_document stands apart from the layout so that runs saved before it existed still resume
    layout_arguments = {k: v for k, v in asdict(layout).items() if k != "query_reads_document"}
    checkpoints.claim({"teacher": str(teacher_model), "dataset": str(dataset.root), "split": split,
                       "layout": layout_arguments, "query_reads_document": query_reads_document, "epochs": epochs,
                       "list_size": list_size,
                       "learning_rate": learning_rate, "seed": seed, "miner": miner, "dev_fraction": dev_fraction,
                       "max_steps": max_steps, "precision": precision, "pseudo_queries": pseudo_queries,
                       "pseudo_query_source": pseudo_query_source, "hidden_weight": hidden_weight, "init": init},
                      added={"pseudo_query_source": "title", "query_reads_document": False})
    lists = checkpoints.teacher_lists()
    if lists is None:
        lists = _teacher_lists(teacher.eval(), examples, precision, _tqdm)
        checkpoints.save_teacher_lists(lists)
    total = epochs * len(lists) if max_steps < 0 else min(max_steps, epochs * len(lists))
    optimiser = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    resumed = latest_checkpoint(checkpoints.folder)
    step = 0
    if resumed is not None:
        logger.info("resuming from %s", resumed)
        state = torch.load(resumed / "state.pt", weights_only=False)
        student.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step = state["step"]
    teacher_encoder = teacher[0].model.eval()
    student.train()
    for position in _tqdm(list(range(step, total)), "training split cross-encoder"):
        epoch, within = divmod(position, len(lists))
        order = list(range(len(lists)))
        random.Random(seed + epoch).shuffle(order)  # the same order however often the run resumes
        query, documents, reference = lists[order[within]]
        torch.manual_seed(seed * 1_000_003 + position)  # dropout repeats exactly across resumes
        inputs = student.joint_inputs(query, documents)
        states: list[torch.Tensor] = []
        with precision_context(precision):
            scores = student(inputs, states if hidden_weight else None)
            loss = all_pairs_margin_mse(scores, reference)
            if hidden_weight:
                targets = _teacher_states(teacher_encoder, inputs, local_layers)
                loss = loss + hidden_weight * hidden_state_loss(states, targets, inputs["joint"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        step = position + 1
        if step % save_steps == 0 and step < total:
            checkpoints.save(step, {"model": student.state_dict(), "optimiser": optimiser.state_dict(),
                                    "schedule": schedule.state_dict(), "step": step})
        if on_step is not None:
            on_step(step)
    student.eval()
    dev_ndcg = dev_reranking(index, data.dev_queries, dev_qrels(dataset, split, data.dev_queries), miner, precision)
    dev = {"teacher": dev_ndcg(teacher), "student": dev_ndcg(student)} if data.dev_queries else {}
    card = {"kind": "split-cross-encoder", "head": "segment-similarity", "distilled_from": str(teacher_model),
            "initialised_from": init,
            "layout": {**asdict(layout), "layers": len(student.encoder.encoder.layer)},
            "dataset": str(dataset.root), "split": split,
            "data": {**data.to_json(), "pseudo_query_lists": len(examples) - len(data.examples),
                     "pseudo_query_source": pseudo_query_source}, "miner": miner,
            "parameters": {"epochs": epochs, "list_size": list_size, "learning_rate": learning_rate, "seed": seed,
                           "max_steps": max_steps, "steps": total, "precision": precision,
                           "dev_fraction": dev_fraction,
                           "loss": "MarginMSE over every pair of each list, on the teacher's scores"
                                   + (f" + {hidden_weight} x relative MSE of token states (last split layer and "
                                      "every joint layer)" if hidden_weight else ""),
                           "hidden_weight": hidden_weight},
            "dev_ndcg@10": {**dev, "first_stage": miner}, "resumed_from": resumed.name if resumed else None,
            "train_seconds": round(time.perf_counter() - started, 1)}
    save_with_card(student, output, card)
    return card
