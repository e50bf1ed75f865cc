"""What every training run shares: a checkpoint folder next to the output (so an interrupted run
resumes), and a save that never leaves a half-written model at the output path."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from rankstack.models.hardware import training_runtime
from rankstack.train.arguments import (
    BiEncoderTraining,
    CrossEncoderTraining,
    DistillationTraining,
    LateInteractionTraining,
    SparseTraining,
)

logger = logging.getLogger(__name__)


def checkpoint_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.checkpoints"


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint an interrupted earlier run left, if any; training resumes from it."""
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1])
                   if p.name.rsplit("-", 1)[-1].isdigit() else -1) if checkpoints.is_dir() else []
    return found[-1] if found else None


def resume_point(checkpoints: Path) -> Path | None:
    """The checkpoint a run resumes from (the newest an interrupted earlier run left), said in the log."""
    resumed = latest_checkpoint(checkpoints)
    if resumed is not None:
        logger.info("resuming from %s", resumed)
    return resumed


def run_facts(resumed: Path | None, started: float) -> dict[str, Any]:
    """The last entries of every training card: the checkpoint resumed from and the seconds taken."""
    return {"resumed_from": resumed.name if resumed else None,
            "train_seconds": round(time.perf_counter() - started, 1)}


def save_with_card(model: Any, output: Path, card: dict[str, Any]) -> None:
    """Save to a staging folder, write the model card, then swap it into place; the checkpoints go last,
    once the model is safely saved."""
    staging = output.parent / f".{output.name}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging))
    (staging / "rankstack_training.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    shutil.rmtree(checkpoint_folder(output), ignore_errors=True)


def trainer_arguments(checkpoints: Path, args: BiEncoderTraining | CrossEncoderTraining | DistillationTraining
                      | SparseTraining | LateInteractionTraining) -> dict[str, Any]:
    """Keyword arguments shared by every trainer: seeded, on the device and in the precision
    ``training_runtime`` gives for the arguments, checkpoints every ``save_steps`` (two kept)."""
    runtime = training_runtime(getattr(args, "precision", "auto"), getattr(args, "device", "auto"))
    return {"output_dir": str(checkpoints), "num_train_epochs": args.epochs, "max_steps": args.max_steps,
            "per_device_train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "warmup_ratio": 0.1, "seed": args.seed, "data_seed": args.seed, "save_strategy": "steps",
            "save_steps": args.save_steps, "save_total_limit": 2, "logging_steps": 10, "report_to": [],
            "use_cpu": runtime.device == "cpu", "bf16": runtime.precision == "bf16",
            "fp16": runtime.precision == "fp16", "disable_tqdm": False}


def train_resuming(trainer: Any, checkpoints: Path) -> Path | None:
    """Train, resuming from an interrupted run's newest checkpoint if there is one; returns that checkpoint."""
    resumed = resume_point(checkpoints)
    trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
    return resumed


def example_columns(examples: list[tuple[str, str, tuple[str, ...]]]) -> dict[str, list[str]]:
    """query, positive, negative_1 ... negative_n columns, as the sentence-transformers trainers take them."""
    columns = {"query": [e[0] for e in examples], "positive": [e[1] for e in examples]}
    for k in range(len(examples[0][2]) if examples else 0):
        columns[f"negative_{k + 1}"] = [e[2][k] for e in examples]
    return columns
