"""The lean SPLADE training head: the same vectors and gradients as the plain head, for every weight, with
padded texts in the batch; the model computes the plain way again after the block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from rankstack.train.sparse import build_splade_model  # noqa: E402
from rankstack.train.splade_head import lean_splade_head  # noqa: E402

TEXTS = ["parrots have bright feathers", "a river boat", "stock markets fell sharply on monday morning", "x"]


def _random_bert(directory: Path) -> Path:
    words = sorted({w for t in TEXTS for w in t.split()} | {"unrelated", "words", "too"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                     initializer_range=0.5, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)  # training mode, same numbers twice
    torch.manual_seed(1)
    transformers.BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _vectors_and_gradients(model: object) -> tuple[object, dict[str, object]]:
    model.zero_grad()  # type: ignore[attr-defined]
    features = model.preprocess(TEXTS)  # type: ignore[attr-defined]
    vectors = model(features)["sentence_embedding"]  # type: ignore[operator]
    torch.manual_seed(2)
    (vectors * torch.rand_like(vectors)).sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()  # type: ignore[attr-defined]
                 if p.grad is not None}
    return vectors.detach(), gradients


def test_the_lean_head_gives_the_plain_heads_vectors_and_gradients(tmp_path: Path) -> None:
    model = build_splade_model(str(_random_bert(tmp_path / "bert")), max_length=16, head_bias=0.0)
    model.train()
    plain, plain_gradients = _vectors_and_gradients(model)
    active = (plain > 0).float().mean()
    assert 0.05 < active < 0.95, active  # some terms on and some off: both sides of the relu are exercised
    with lean_splade_head(model) as switched:
        lean, lean_gradients = _vectors_and_gradients(model)
    assert switched == 1
    assert torch.allclose(lean, plain, atol=1e-5)
    assert set(lean_gradients) == set(plain_gradients)
    assert len(plain_gradients) > 10  # the decoder, the head's transform and the encoder's layers
    for name, gradient in plain_gradients.items():
        assert torch.allclose(lean_gradients[name], gradient, rtol=1e-4, atol=1e-6), name
    again, _ = _vectors_and_gradients(model)
    assert torch.equal(again, plain)  # the plain computation is back


def test_the_lean_head_finds_the_document_side_of_inference_free_splade(tmp_path: Path) -> None:
    model = build_splade_model(str(_random_bert(tmp_path / "bert")), max_length=16, inference_free_queries=True)
    with lean_splade_head(model) as switched:
        assert switched == 1


def test_under_bf16_autocast_the_lean_head_follows_the_plain_one(tmp_path: Path) -> None:
    # Training runs under bf16 autocast on CPUs with bf16 units: the logits are bf16 either way, so the two
    # heads agree to bf16's precision, not exactly (a near tie may pick another token).
    model = build_splade_model(str(_random_bert(tmp_path / "bert")), max_length=16, head_bias=0.0)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, plain_gradients = _vectors_and_gradients(model)
        with lean_splade_head(model):
            lean, lean_gradients = _vectors_and_gradients(model)
    assert lean.dtype == torch.float32
    assert torch.allclose(lean, plain.float(), atol=0.05)
    for name, gradient in plain_gradients.items():
        if "attention.self.key.bias" in name:
            continue  # zero in exact arithmetic (a softmax ignores a shift of every key): only noise to compare
        cosine = torch.nn.functional.cosine_similarity(lean_gradients[name].flatten().float(),
                                                       gradient.flatten().float(), dim=0)
        assert cosine > 0.98, (name, cosine)


def test_encoding_pools_each_texts_own_logits_as_sentence_transformers_does(tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder

    from rankstack.models.splade import SpladeEncoder

    build_splade_model(str(_random_bert(tmp_path / "bert")), max_length=16, head_bias=0.0).save(
        str(tmp_path / "splade"))
    reference = SparseEncoder(str(tmp_path / "splade"), device="cpu").encode_document(
        TEXTS, convert_to_tensor=True).to_dense()
    encoder = SpladeEncoder(str(tmp_path / "splade"))
    assert encoder._decoder is not None  # the lean path is the one under test
    ours = encoder.encode_docs(TEXTS).toarray()  # one batch: the short texts padded beside the long one
    assert ours.shape == tuple(reference.shape)
    assert np.allclose(ours, reference.numpy(), atol=1e-5)
    assert (ours > 0).mean() > 0.05
    one_at_a_time = np.vstack([encoder.encode_docs([text]).toarray() for text in TEXTS])
    assert np.allclose(one_at_a_time, ours, atol=1e-5)  # padding never counts
