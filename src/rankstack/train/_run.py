"""What every training run shares: a checkpoint folder next to the output (so an interrupted run
resumes), and a save that never leaves a half-written model at the output path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def checkpoint_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.checkpoints"


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint an interrupted earlier run left, if any; training resumes from it."""
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1])
                   if p.name.rsplit("-", 1)[-1].isdigit() else -1) if checkpoints.is_dir() else []
    return found[-1] if found else None


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
