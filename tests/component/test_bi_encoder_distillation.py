"""`train bi-encoder --teacher`: Margin-MSE distillation of a cross-encoder into the single-vector model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets", reason="the train extra is not installed")
pytest.importorskip("accelerate", reason="the train extra is not installed")
pytest.importorskip("sentence_transformers", reason="the train extra is not installed")

from rankstack.errors import ModelLoadError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.models.loading import resolve_model_location  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.train.arguments import BiEncoderTraining, CrossEncoderTraining  # noqa: E402
from rankstack.train.bi_encoder import (  # noqa: E402
    _contrastive_and_margins,
    _distillation_columns,
    train_bi_encoder,
)
from rankstack.train.cross_encoder import train_cross_encoder  # noqa: E402


def test_each_negative_gets_a_row_labelled_with_the_scaled_teacher_margin() -> None:
    examples = [("q1", "p1", ("n1", "n2")), ("q2", "p2", ("n3", "n4"))]
    scores = [[5.0, 1.0, 3.0], [2.0, 2.0, -4.0]]
    columns, scale = _distillation_columns(examples, scores)
    assert scale == pytest.approx(4.0 * float(np.std([5, 1, 3, 2, 2, -4])))
    assert columns["anchor"] == ["q1", "q1", "q2", "q2"] and columns["negative"] == ["n1", "n2", "n3", "n4"]
    assert columns["positive"] == ["p1", "p1", "p2", "p2"]
    assert columns["label"] == pytest.approx([4.0 / scale, 2.0 / scale, 0.0, 6.0 / scale])


def test_the_margin_term_fits_cosine_margins_and_adds_to_the_contrastive_loss() -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import pairwise_cos_sim

    model = SentenceTransformer(resolve_model_location("default"), device="cpu")
    texts = (["loyal dogs", "fast cars"], ["dogs are loyal pets", "cars drive fast"],
             ["the stock market fell", "parrots have feathers"])
    features = [model.tokenize(column) for column in texts]
    with torch.no_grad():
        vectors = [model(dict(f))["sentence_embedding"] for f in features]
        own_margins = pairwise_cos_sim(vectors[0], vectors[1]) - pairwise_cos_sim(vectors[0], vectors[2])
        contrastive = float(_contrastive_and_margins(model, 0.0)(features, own_margins))
        # labels equal to the model's own cosine margins: the margin term is zero, only the contrastive part is left
        assert float(_contrastive_and_margins(model, 5.0)(features, own_margins)) == pytest.approx(contrastive, 1e-5)
        shifted = own_margins + 0.5  # every margin off by 0.5: the term is 0.25 per unit of weight
        assert float(_contrastive_and_margins(model, 2.0)(features, shifted)) == pytest.approx(contrastive + 0.5,
                                                                                               1e-4)


def test_distillation_from_a_trained_cross_encoder_saves_a_bi_encoder_with_its_teacher_on_the_card(
        tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    train_cross_encoder(tiny_beir, teacher, tiny_index,
                        CrossEncoderTraining(split="test", batch_size=2, max_steps=1, negatives=1, max_length=64,
                                             dev_fraction=0.0, precision="fp32"))
    scored: list[int] = []
    output = tmp_path / "student"
    card = train_bi_encoder(tiny_beir, output, tiny_index,
                            BiEncoderTraining(split="test", batch_size=2, max_steps=2, dev_fraction=0.0,
                                              teacher=str(teacher), negatives=2, pseudo_queries=3),
                            progress=lambda description, total: scored.append)
    examples = card["data"]["examples"]
    lists = card["teacher"]["pseudo_query_lists"]
    assert 0 < lists <= 3
    assert card["teacher"]["pairs_scored"] == (examples + lists) * 3 == sum(scored)
    assert card["teacher"]["label_scale"] > 0 and "MarginMSELoss" in card["parameters"]["loss"]
    saved = json.loads((output / "rankstack_training.json").read_text())
    assert saved["teacher"]["model"] == str(teacher) and saved["parameters"]["negatives"] == 2
    hits = parse_pipeline(f"bm25%5>>dense(model={output},precision=fp32)", tiny_index).search("parrot feathers")
    assert {h.doc_id for h in hits} == {h.doc_id for h in parse_pipeline("bm25%5", tiny_index).search(
        "parrot feathers")}


def test_a_bi_encoder_given_as_teacher_is_refused_before_any_work(tiny_beir: Path, tiny_index: Index,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a bi-encoder.*--teacher needs a cross-encoder"):
        train_bi_encoder(tiny_beir, tmp_path / "student", tiny_index,
                         BiEncoderTraining(split="test", teacher=str(resolve_model_location("default"))))
    assert not (tmp_path / "student").exists() and not (tmp_path / ".student.checkpoints").exists()


def test_the_cli_asks_for_a_teacher_when_unlabelled_lists_are_requested(
        tiny_beir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_cli import invoke

    code, _, err = invoke(["train", "bi-encoder", str(tiny_beir), "-o", str(tmp_path / "m"), "--pseudo-queries", "5"],
                          monkeypatch, capsys)
    assert code != 0 and "--pseudo-queries" in err and "--teacher" in err
    assert not (tmp_path / "m").exists()
