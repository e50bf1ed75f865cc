"""Fixtures shared by this folder's late-interaction tests (the ColBERT and centroid tests)."""

from __future__ import annotations

import pytest

from rankstack.index import Index


@pytest.fixture(scope="module")
def tiny_colbert(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.component._late_interaction import late_interaction_model

    return late_interaction_model(tmp_path_factory.mktemp("colbert"))


@pytest.fixture
def indexed(tiny_index: Index, tiny_colbert: str) -> Index:
    """The tiny index with ``tiny_colbert``'s int8 token vectors."""
    from rankstack.index.token_vectors import build_token_vectors
    from rankstack.models.late_interaction import load_late_interaction

    build_token_vectors(tiny_index, load_late_interaction(tiny_colbert), "int8")
    return tiny_index
