"""SPLADE's pooling without the whole ``texts x tokens x vocabulary`` logits tensor.

A SPLADE weight is ``log1p(relu(max over a text's tokens of logit))`` (the activation is monotonic, so the
maximum can be taken first), with ``logits = hidden @ W.T + b`` over the vocabulary. Computing the logits a
text at a time over its own tokens only reads no padding and never holds more than one text's logits; the
largest logit of each term and the token it came from are all that encoding (and training's backward pass,
``rankstack.train.splade_head``) need.
"""

from __future__ import annotations

from typing import Any

from rankstack._optional import require


def is_max_relu_pooling(module: Any) -> bool:
    """Whether ``module`` is sentence-transformers' SpladePooling with max pooling of relu'd logits, the
    pooling this module computes."""
    return type(module).__name__ == "SpladePooling" and getattr(module, "pooling_strategy", "") == "max" and \
        getattr(module, "activation_function", "") == "relu"


def decoder_of(transformer: Any) -> Any:
    """The linear vocabulary decoder (with a bias) that ends ``transformer``'s masked-language model, or None
    when it does not end in one."""
    torch = require("torch", "dense", "SPLADE")
    output_embeddings = getattr(getattr(transformer, "model", None), "get_output_embeddings", None)
    decoder = output_embeddings() if output_embeddings is not None else None
    return decoder if isinstance(decoder, torch.nn.Linear) and decoder.bias is not None else None


def max_logits(hidden: Any, weight: Any, bias: Any, mask: Any) -> tuple[Any, Any]:
    """Per text and vocabulary term, the largest logit over the text's tokens (``mask``) and that token's
    position; a text without tokens gets 0 everywhere (weight 0, as padding gives in the plain pooling)."""
    torch = require("torch", "dense", "SPLADE")
    texts = hidden.shape[0]
    best = hidden.new_zeros(texts, weight.shape[0])
    where = torch.zeros(texts, weight.shape[0], dtype=torch.long, device=hidden.device)
    valid = mask.bool()
    for row in range(texts):
        positions = valid[row].nonzero().squeeze(1)
        if positions.numel() == 0:
            continue
        values, arg = torch.addmm(bias, hidden[row, positions], weight.t()).max(dim=0)
        best[row] = values
        where[row] = positions[arg]
    return best, where
