"""Bi-encoder and cross-encoder fine-tuning mechanics on a tiny collection with the bundled MiniLM weights."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

pytest.importorskip("datasets", reason="the train extra is not installed")
pytest.importorskip("accelerate", reason="the train extra is not installed")
pytest.importorskip("sentence_transformers", reason="the train extra is not installed")

from rankstack.errors import EmptyInputError, RankstackError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.io import BeirDataset  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.stages.rerank import CrossEncoderReranker  # noqa: E402
from rankstack.train.arguments import BiEncoderTraining, CrossEncoderTraining  # noqa: E402
from rankstack.train.bi_encoder import train_bi_encoder  # noqa: E402
from rankstack.train.cross_encoder import train_cross_encoder  # noqa: E402
from rankstack.train.data import dev_queries, mine_examples, pseudo_query_lists  # noqa: E402


def test_mining_reports_unknown_ids_and_uses_unjudged_negatives(tiny_beir: Path, tiny_index: Index) -> None:
    with (tiny_beir / "qrels" / "test.tsv").open("a") as handle:
        handle.write("ghost\td1\t1\nq1\tno-such-doc\t1\n")
    data = mine_examples(BeirDataset.open(tiny_beir), tiny_index, "test", dev_fraction=0.0)
    assert data.skipped["qrels_unknown_query"] == 1 and data.skipped["qrels_unknown_document"] == 1
    assert data.triples and all(positive != negative for _, positive, negative in data.triples)


def test_dev_queries_are_the_ones_mining_holds_out(tiny_beir: Path, tiny_index: Index) -> None:
    dataset = BeirDataset.open(tiny_beir)
    for fraction, seed in [(0.5, 1), (0.5, 2), (0.0, 1)]:
        held_out = mine_examples(dataset, tiny_index, "test", dev_fraction=fraction, seed=seed).dev_queries
        assert dev_queries(dataset, tiny_index, "test", dev_fraction=fraction, seed=seed) == held_out
    assert dev_queries(dataset, tiny_index, "test", dev_fraction=0.5, seed=1)  # not empty at half


def test_pseudo_query_lists_put_the_source_document_first(tiny_index: Index) -> None:
    lists = pseudo_query_lists(tiny_index, count=10, documents_per_list=2)
    assert lists  # documents whose query finds no other document are left out, not padded
    for query, source, others in lists:
        assert len(others) == 1 and source not in others
        assert source.startswith(query) or query in source  # the title, or the first sentence of the text
    assert len(pseudo_query_lists(tiny_index, count=2, documents_per_list=2)) <= 2


def test_pseudo_queries_can_be_sentences_of_the_document(tiny_index: Index) -> None:
    lists = pseudo_query_lists(tiny_index, count=10, documents_per_list=2, source="sentence")
    assert lists
    for query, source, _ in lists:
        assert query in source and len(query.split()) >= 6  # a whole sentence of the text, not a fragment
    assert not {"Cats", "Dogs", "Fish", "Birds"} & {query for query, _, _ in lists}  # no titles
    with pytest.raises(RankstackError, match="--pseudo-query-source title or sentence"):
        pseudo_query_lists(tiny_index, count=2, source="abstract")


def test_no_positives_stops_with_a_clear_message(tiny_beir: Path, tiny_index: Index) -> None:
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(EmptyInputError, match="no positive judgements"):
        mine_examples(BeirDataset.open(tiny_beir), tiny_index, "test")


def test_training_saves_a_loadable_model_with_a_card(tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    output = tmp_path / "model"
    card = train_bi_encoder(tiny_beir, output, tiny_index,
                            BiEncoderTraining(split="test", batch_size=2, max_steps=2, dev_fraction=0.0))
    assert card["kept"] == "fine-tuned" and card["data"]["examples"] > 0
    saved = json.loads((output / "rankstack_training.json").read_text())
    assert saved["parameters"]["seed"] == 42 and saved["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert not list(tmp_path.glob(".model.*"))  # checkpoints and staging cleaned up
    hits = parse_pipeline(f"bm25%5>>dense(model={output},precision=fp32)", tiny_index).search("parrot feathers")
    candidates = parse_pipeline("bm25%5", tiny_index).search("parrot feathers")
    assert {h.doc_id for h in hits} == {h.doc_id for h in candidates}  # re-scored, none lost or added
    assert all(-1.0001 <= h.score <= 1.0001 for h in hits)  # cosine similarities of the saved model


def test_mined_examples_carry_the_requested_number_of_distinct_negatives(tiny_beir: Path, tiny_index: Index) -> None:
    data = mine_examples(BeirDataset.open(tiny_beir), tiny_index, "test", negatives_per_positive=2, dev_fraction=0.0)
    assert data.negatives_per_example == 2
    assert all(positive not in negatives for _, positive, negatives in data.examples)
    assert len(data.triples) == 2 * len(data.examples)


def test_cross_encoder_training_saves_a_reranker_the_stage_loads(tiny_beir: Path, tiny_index: Index,
                                                                  tmp_path: Path) -> None:
    output = tmp_path / "reranker"
    card = train_cross_encoder(tiny_beir, output, tiny_index,
                               CrossEncoderTraining(split="test", batch_size=2, max_steps=2, negatives=2,
                                                    max_length=64, dev_fraction=0.0, precision="fp32"))
    assert card["kind"] == "cross-encoder" and card["data"]["negatives_per_example"] == 2
    assert not list(tmp_path.glob(".reranker.*"))
    stage = parse_pipeline(f"bm25%5>>cross_encoder(model={output},precision=fp32)", tiny_index)
    hits = stage.search("parrot feathers")
    candidates = parse_pipeline("bm25%5", tiny_index).search("parrot feathers")
    assert {h.doc_id for h in hits} == {h.doc_id for h in candidates}
    assert all(math.isfinite(h.score) for h in hits)
    # by default the stage reads with the window the model was trained with; a number overrides it
    assert CrossEncoderReranker(tiny_index, str(output)).loaded.max_seq_length == 64
    assert CrossEncoderReranker(tiny_index, str(output), max_length=32).loaded.max_seq_length == 32


_TEACHER = CrossEncoderTraining(split="test", batch_size=2, max_steps=1, negatives=2, max_length=64,
                                dev_fraction=0.0, precision="fp32")


class _Interrupt(TrainerCallback):
    """Stops the run like Ctrl-C would, after the given step has been checkpointed."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step > self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_an_interrupted_run_resumes_from_its_last_checkpoint(kind: str, tiny_beir: Path, tiny_index: Index,
                                                              tmp_path: Path) -> None:
    output = tmp_path / "model"

    def train(callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
        if kind == "bi-encoder":
            bi = BiEncoderTraining(split="test", batch_size=2, max_steps=4, save_steps=2, dev_fraction=0.0)
            return train_bi_encoder(tiny_beir, output, tiny_index, bi, callbacks=callbacks)
        cross = CrossEncoderTraining(split="test", batch_size=2, max_steps=4, save_steps=2, dev_fraction=0.0,
                                     negatives=1, max_length=64, precision="fp32")
        return train_cross_encoder(tiny_beir, output, tiny_index, cross, callbacks=callbacks)

    with pytest.raises(KeyboardInterrupt):
        train(callbacks=[_Interrupt(at_step=2)])
    assert not output.exists()  # nothing half-written at the output path
    assert (tmp_path / ".model.checkpoints" / "checkpoint-2").is_dir()
    card = train()
    assert card["resumed_from"] == "checkpoint-2"
    assert output.is_dir() and not (tmp_path / ".model.checkpoints").exists()


def test_layer_distillation_loss_maps_each_kept_layer_to_the_teacher_layer_it_came_from(
        tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    from rankstack.models.cross_heads import load_cross_encoder
    from rankstack.train.compress import LayerDistillationLoss, drop_layers

    teacher_dir = tmp_path / "teacher"
    train_cross_encoder(tiny_beir, teacher_dir, tiny_index, _TEACHER)
    teacher = load_cross_encoder(str(teacher_dir)).eval()
    inputs = [["loyal dogs", "parrot feathers"], ["dogs are loyal", "parrots have feathers"],
              ["cats sleep a lot", "the stock market fell"]]
    everything = LayerDistillationLoss(drop_layers(teacher, list(range(6))).eval(), teacher, list(range(6)), 1.0)
    same = everything(inputs)
    assert float(same["hidden_states"]) < 1e-10 and float(same["score_margin"]) < 1e-10
    half = LayerDistillationLoss(drop_layers(teacher, [1, 3, 5]).eval(), teacher, [1, 3, 5], 1.0)(inputs)
    assert float(half["hidden_states"]) > 1e-3
    assert not any(p.requires_grad for p in teacher.parameters())  # the teacher is never trained


def test_distillation_keeps_evenly_spaced_layers_and_saves_a_smaller_student(tiny_beir: Path, tiny_index: Index,
                                                                              tmp_path: Path) -> None:
    # Its speed is measured by benchmarks/reranker_compression.py, never by a timed test.
    from rankstack.train.arguments import DistillationTraining
    from rankstack.train.compress import distil_cross_encoder, evenly_spaced_layers

    assert evenly_spaced_layers(6, 3) == [1, 3, 5] and evenly_spaced_layers(6, 6) == list(range(6))
    assert evenly_spaced_layers(12, 4) == [2, 5, 8, 11]
    teacher = tmp_path / "teacher"
    train_cross_encoder(tiny_beir, teacher, tiny_index, _TEACHER)
    args = DistillationTraining(teacher=str(teacher), keep_layers=2, split="test", batch_size=2, max_steps=2,
                                negatives=2, max_length=64, dev_fraction=0.0, precision="fp32")
    card = distil_cross_encoder(tiny_beir, tmp_path / "student", tiny_index, args)
    assert card["layers"] == {"teacher": 6, "kept": [2, 5]}
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    teacher_config = json.loads((teacher / "config.json").read_text())
    assert saved["num_hidden_layers"] < teacher_config["num_hidden_layers"]
    hits = parse_pipeline(f"bm25%5>>cross_encoder(model={tmp_path / 'student'},max_length=64,precision=fp32)",
                          tiny_index).search("loyal dogs")
    candidates = parse_pipeline("bm25%5", tiny_index).search("loyal dogs")
    assert {h.doc_id for h in hits} == {h.doc_id for h in candidates}
