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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rankstack.errors import RankstackError
from rankstack.index import Index
from rankstack.io import BeirDataset
from rankstack.models.cross_heads import load_cross_encoder
from rankstack.models.encoder import precision_context
from rankstack.models.hardware import DeviceError, training_runtime
from rankstack.models.loading import is_split_cross_encoder, require, resolve_model_location
from rankstack.models.split import SplitCrossEncoder, SplitLayout
from rankstack.train._run import checkpoint_folder, resume_point, run_facts, save_with_card
from rankstack.train.arguments import SplitTraining
from rankstack.train.cross_encoder import dev_reranking
from rankstack.train.data import (
    TrainingData,
    check_pseudo_query_source,
    dev_qrels,
    mine_examples,
    pseudo_query_lists,
)

logger = logging.getLogger(__name__)

TrainingList = tuple[str, list[str], torch.Tensor]  # query, documents, the teacher's scores for them
Example = tuple[str, str, tuple[str, ...]]  # query, positive, the mined others


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


def _teacher_lists(teacher: Any, examples: list[Example], precision: str, progress: Any) -> list[TrainingList]:
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


@dataclass
class _Setup:
    """What a run starts from: its arguments (precision and ``init`` resolved), the teacher, the student
    and the training data (``examples``: the mined lists, then any pseudo-query lists)."""

    args: SplitTraining
    precision: str
    init: str | None
    teacher: Any
    student: SplitCrossEncoder
    dataset: BeirDataset
    data: TrainingData
    examples: list[Example]


def _layout(args: SplitTraining) -> SplitLayout:
    return SplitLayout(args.local_layers, args.query_tokens, args.document_tokens, args.prune,
                       args.query_reads_document)


def _setup(dataset_dir: str | Path, index: Index, args: SplitTraining) -> _Setup:
    # int8 is an inference format: trains in fp32. The split student's loop runs on the CPU.
    runtime = training_runtime(args.precision, "cpu" if args.device == "auto" else args.device)
    if runtime.device != "cpu":
        raise DeviceError(f"train split runs on the CPU; drop device={args.device}")
    precision = runtime.precision
    teacher = load_cross_encoder(str(resolve_model_location(args.teacher)))
    init = str(resolve_model_location(args.init)) if args.init else args.init
    student = (_initialised_student(teacher, args, init) if init
               else SplitCrossEncoder.from_cross_encoder(teacher, _layout(args)))
    without_attention_dropout(student.encoder)
    dataset = BeirDataset.open(dataset_dir)
    data = mine_examples(dataset, index, args.split, args.miner, negatives_per_positive=args.list_size - 1,
                         dev_fraction=args.dev_fraction, seed=args.seed)
    examples = data.examples + (pseudo_query_lists(index, args.pseudo_queries, args.miner, args.list_size,
                                                   args.seed, args.pseudo_query_source)
                                if args.pseudo_queries else [])
    return _Setup(args, precision, init, teacher, student, dataset, data, examples)


def _initialised_student(teacher: Any, args: SplitTraining, init: str) -> SplitCrossEncoder:
    """The split model at ``init``, refused unless it is a split of the teacher in the layout ``args`` ask for
    (whether the query reads the document may differ: it changes attention masks only, not weights)."""
    if not is_split_cross_encoder(init):
        raise RankstackError(f"--init {init} is not a split cross-encoder (rankstack train split writes one); "
                             f"leave --init out to start from a copy of the teacher")
    student = SplitCrossEncoder.load(init)
    student.layout = replace(student.layout, query_reads_document=args.query_reads_document)
    layout = _layout(args)
    if student.layout != layout:
        raise RankstackError(f"{init} was split as {asdict(student.layout)}, not {asdict(layout)}; "
                             f"pass the same --local-layers, --query-tokens, --document-tokens and "
                             f"--prune-stopwords")
    shape = ("num_hidden_layers", "hidden_size", "vocab_size")
    if [getattr(student.encoder.config, k) for k in shape] != [getattr(teacher[0].model.config, k) for k in shape]:
        raise RankstackError(f"{init} is not a split of {args.teacher}: their {', '.join(shape)} differ")
    return student


def _claimed_arguments(setup: _Setup) -> dict[str, Any]:
    """The arguments a run's checkpoint folder is claimed with, keyed as runs saved before have them:
    ``query_reads_document`` stands apart from the layout so that runs saved before it existed still resume."""
    args = setup.args
    layout = {k: v for k, v in asdict(_layout(args)).items() if k != "query_reads_document"}
    return {"teacher": str(args.teacher), "dataset": str(setup.dataset.root), "split": args.split,
            "layout": layout, "query_reads_document": args.query_reads_document, "epochs": args.epochs,
            "list_size": args.list_size, "learning_rate": args.learning_rate, "seed": args.seed,
            "miner": args.miner, "dev_fraction": args.dev_fraction, "max_steps": args.max_steps,
            "precision": setup.precision, "pseudo_queries": args.pseudo_queries,
            "pseudo_query_source": args.pseudo_query_source, "hidden_weight": args.hidden_weight, "init": setup.init}


def _scored_lists(setup: _Setup, checkpoints: _Checkpoints) -> list[TrainingList]:
    """The training lists with the teacher's scores: those an interrupted run saved, or scored now and saved."""
    lists = checkpoints.teacher_lists()
    if lists is None:
        lists = _teacher_lists(setup.teacher.eval(), setup.examples, setup.precision, _tqdm)
        checkpoints.save_teacher_lists(lists)
    return lists


@dataclass
class _Loop:
    """The student's optimisation: one list per step, ``total`` steps, and the state a checkpoint holds."""

    setup: _Setup
    lists: list[TrainingList]
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    total: int

    @classmethod
    def start(cls, setup: _Setup, lists: list[TrainingList]) -> _Loop:
        """AdamW with a linear warm-up over the first tenth of the steps, then a linear decay to 0."""
        args = setup.args
        total = args.epochs * len(lists) if args.max_steps < 0 else min(args.max_steps, args.epochs * len(lists))
        optimiser = torch.optim.AdamW(setup.student.parameters(), lr=args.learning_rate, weight_decay=0.01)
        warmup = max(1, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
        return cls(setup, lists, optimiser, schedule, total)

    def state(self, step: int) -> dict[str, Any]:
        return {"model": self.setup.student.state_dict(), "optimiser": self.optimiser.state_dict(),
                "schedule": self.schedule.state_dict(), "step": step}

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint's state; returns its step."""
        self.setup.student.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        return int(state["step"])

    def run(self, start: int, checkpoints: _Checkpoints, on_step: Callable[[int], Any] | None) -> None:
        """Steps ``start`` to ``total``, checkpointed every ``checkpoints.every`` (not after the last)."""
        teacher_encoder = self.setup.teacher[0].model.eval()
        self.setup.student.train()
        for position in _tqdm(list(range(start, self.total)), "training split cross-encoder"):
            self.step(position, teacher_encoder)
            step = position + 1
            if step % checkpoints.every == 0 and step < self.total:
                checkpoints.save(step, self.state(step))
            if on_step is not None:
                on_step(step)
        self.setup.student.eval()

    def step(self, position: int, teacher_encoder: Any) -> None:
        """One optimiser step on one list; the order of the lists and the dropout repeat exactly however
        often the run resumes."""
        args, student = self.setup.args, self.setup.student
        epoch, within = divmod(position, len(self.lists))
        order = list(range(len(self.lists)))
        random.Random(args.seed + epoch).shuffle(order)
        query, documents, reference = self.lists[order[within]]
        torch.manual_seed(args.seed * 1_000_003 + position)
        inputs = student.joint_inputs(query, documents)
        states: list[torch.Tensor] = []
        with precision_context(self.setup.precision):
            scores = student(inputs, states if args.hidden_weight else None)
            loss = all_pairs_margin_mse(scores, reference)
            if args.hidden_weight:
                targets = _teacher_states(teacher_encoder, inputs, args.local_layers)
                loss = loss + args.hidden_weight * hidden_state_loss(states, targets, inputs["joint"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        self.optimiser.step()
        self.schedule.step()
        self.optimiser.zero_grad()


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

    def resume(self, loop: _Loop) -> tuple[Path | None, int]:
        """Restore the newest checkpoint an interrupted run left into ``loop``; returns it and the step to
        go on from (none and 0 when there is none)."""
        resumed = resume_point(self.folder)
        if resumed is None:
            return None, 0
        return resumed, loop.restore(torch.load(resumed / "state.pt", weights_only=False))


def _card(setup: _Setup, index: Index, total: int, resumed: Path | None, started: float) -> dict[str, Any]:
    """The training card, with the teacher's and the student's dev nDCG@10 reranking the miner's candidates."""
    args, data, student = setup.args, setup.data, setup.student
    dev_ndcg = dev_reranking(index, data.dev_queries, dev_qrels(setup.dataset, args.split, data.dev_queries),
                             args.miner, setup.precision)
    dev = {"teacher": dev_ndcg(setup.teacher), "student": dev_ndcg(student)} if data.dev_queries else {}
    loss = "MarginMSE over every pair of each list, on the teacher's scores" + (
        f" + {args.hidden_weight} x relative MSE of token states (last split layer and every joint layer)"
        if args.hidden_weight else "")
    return {"kind": "split-cross-encoder", "head": "segment-similarity", "distilled_from": str(args.teacher),
            "initialised_from": setup.init,
            "layout": {**asdict(_layout(args)), "layers": len(student.encoder.encoder.layer)},
            "dataset": str(setup.dataset.root), "split": args.split,
            "data": {**data.to_json(), "pseudo_query_lists": len(setup.examples) - len(data.examples),
                     "pseudo_query_source": args.pseudo_query_source}, "miner": args.miner,
            "parameters": {"epochs": args.epochs, "list_size": args.list_size, "learning_rate": args.learning_rate,
                           "seed": args.seed, "max_steps": args.max_steps, "steps": total,
                           "precision": setup.precision, "dev_fraction": args.dev_fraction, "loss": loss,
                           "hidden_weight": args.hidden_weight},
            "dev_ndcg@10": {**dev, "first_stage": args.miner}, **run_facts(resumed, started)}


def train_split_cross_encoder(dataset_dir: str | Path, output: str | Path, index: Index, args: SplitTraining, *,
                              on_step: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Train a split cross-encoder from ``args.teacher``; resumes from the newest checkpoint of an
    interrupted run. ``on_step(step)`` is called after each optimiser step (for tests and progress).

    ``args.hidden_weight`` weighs a second loss next to the score margins: the student's token states at
    the last split layer and every joint layer against the unsplit teacher's on the same tokens (in the
    spirit of TinyBERT / MiniLM), a far richer signal per list than its 16 scores. ``args.init`` starts
    the student from a split model trained before (same layout) instead of a copy of the teacher: a second
    round of distillation, on more lists or at a lower learning rate; it may have been split with the
    query reading the document or not (``args.query_reads_document`` says how the student will be)."""
    require("transformers", "train", "Split cross-encoder training")
    check_pseudo_query_source(args.pseudo_query_source)
    started = time.perf_counter()
    output = Path(output)
    setup = _setup(dataset_dir, index, args)
    checkpoints = _Checkpoints(checkpoint_folder(output), args.save_steps)
    checkpoints.claim(_claimed_arguments(setup), added={"pseudo_query_source": "title", "query_reads_document": False})
    loop = _Loop.start(setup, _scored_lists(setup, checkpoints))
    resumed, step = checkpoints.resume(loop)
    loop.run(step, checkpoints, on_step)
    card = _card(setup, index, loop.total, resumed, started)
    save_with_card(setup.student, output, card)
    return card
