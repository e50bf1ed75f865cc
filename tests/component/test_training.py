"""Bi-encoder fine-tuning mechanics on a tiny collection with the bundled MiniLM weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("datasets", reason="the train extra is not installed")
pytest.importorskip("accelerate", reason="the train extra is not installed")
pytest.importorskip("sentence_transformers", reason="the train extra is not installed")

from rankstack.errors import EmptyInputError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.io import BeirDataset  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.train.bi_encoder import train_bi_encoder  # noqa: E402
from rankstack.train.data import mine_triples  # noqa: E402


def test_mining_reports_unknown_ids_and_uses_unjudged_negatives(tiny_beir: Path, tiny_index: Index) -> None:
    with (tiny_beir / "qrels" / "test.tsv").open("a") as handle:
        handle.write("ghost\td1\t1\nq1\tno-such-doc\t1\n")
    data = mine_triples(BeirDataset.open(tiny_beir), tiny_index, "test", dev_fraction=0.0)
    assert data.skipped["qrels_unknown_query"] == 1 and data.skipped["qrels_unknown_document"] == 1
    assert data.triples and all(positive != negative for _, positive, negative in data.triples)


def test_no_positives_stops_with_a_clear_message(tiny_beir: Path, tiny_index: Index) -> None:
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(EmptyInputError, match="no positive judgements"):
        mine_triples(BeirDataset.open(tiny_beir), tiny_index, "test")


def test_training_saves_a_loadable_model_with_a_card(tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    output = tmp_path / "model"
    card = train_bi_encoder(tiny_beir, output, tiny_index, split="test", batch_size=2, max_steps=2,
                            dev_fraction=0.0)
    assert card["kept"] == "fine-tuned" and card["data"]["triples"] > 0
    saved = json.loads((output / "rankstack_training.json").read_text())
    assert saved["parameters"]["seed"] == 42 and saved["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert not list(tmp_path.glob(".model.*"))  # checkpoints and staging cleaned up
    hits = parse_pipeline(f"bm25%5>>dense(model={output},precision=fp32)", tiny_index).search("parrot feathers")
    assert len(hits) > 0
