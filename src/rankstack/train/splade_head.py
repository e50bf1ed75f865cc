"""A SPLADE head for training that never holds every token's vocabulary logits.

A SPLADE vector is, per vocabulary term, the largest ``log1p(relu(logit))`` over a text's tokens, with
``logits = hidden @ W.T + b`` over the whole vocabulary (30,522 terms for BERT). Done the plain way, autograd
keeps ``texts x tokens x vocabulary`` floats (96 documents of 256 tokens: 3 GB a copy, and the activation
makes more), and the backward pass multiplies all of them back through the decoder: for MiniLM as many
operations again as the whole transformer. Yet only one token of a text receives a term's gradient (the
maximum's), and only where the term is active (its largest logit above zero), which the FLOPS regulariser
keeps rare.

``lean_splade_head(model)`` makes a SparseEncoder's [MLM transformer, SpladePooling(max, relu)] pairs compute
so, for the duration of a ``with`` block (training): the transformer stops before the decoder, and the
pooling computes the logits one text at a time, keeping only each term's largest logit and the token it came
from; the backward pass sends each active term's gradient to that token, to the decoder's row of the term and
to its bias. The vectors and gradients are those of the plain head (ties between tokens aside, which have no
gradient anyway); the model's weights, files and inference are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rankstack._optional import require
from rankstack.models.splade_pooling import decoder_of, is_max_relu_pooling, max_logits

_GRADIENT_ROWS = 65_536  # active (text, term) pairs handled at once in the backward pass: bounds its memory


def _max_pooled_logits() -> Any:
    torch = require("torch", "train", "Training")

    class MaxPooledLogits(torch.autograd.Function):  # type: ignore[misc,name-defined]
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, mask: Any) -> Any:
            best, where = max_logits(hidden, weight, bias, mask)
            tokens = hidden.shape[1]
            best = best.float()  # under bf16 autocast the logits are bf16; the weights leave in fp32
            ctx.save_for_backward(hidden, weight, where, best)
            ctx.tokens = tokens
            return torch.log1p(torch.relu(best))

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            hidden, weight, where, best = ctx.saved_tensors
            # d log1p(relu(m)) / dm: 1 / (1 + m) where m > 0, else 0 (relu's gradient at 0 is 0)
            grad_out = grad_out.float()
            grad = torch.where(best > 0, grad_out / (1 + best.clamp(min=0)), torch.zeros_like(grad_out))
            grad_hidden = hidden.new_zeros(hidden.shape) if ctx.needs_input_grad[0] else None
            grad_weight = weight.new_zeros(weight.shape) if ctx.needs_input_grad[1] else None
            grad_bias = grad.sum(dim=0).to(weight.dtype) if ctx.needs_input_grad[2] else None
            rows, terms = grad.nonzero(as_tuple=True)
            flat_hidden = hidden.reshape(-1, hidden.shape[-1])
            flat_grad_hidden = grad_hidden.view(-1, hidden.shape[-1]) if grad_hidden is not None else None
            for start in range(0, rows.numel(), _GRADIENT_ROWS):
                row, term = rows[start:start + _GRADIENT_ROWS], terms[start:start + _GRADIENT_ROWS]
                token = row * ctx.tokens + where[row, term]
                g = grad[row, term].unsqueeze(1)
                if flat_grad_hidden is not None:
                    flat_grad_hidden.index_add_(0, token, (g * weight[term]).to(flat_grad_hidden.dtype))
                if grad_weight is not None:
                    grad_weight.index_add_(0, term, (g * flat_hidden[token]).to(grad_weight.dtype))
            return grad_hidden, grad_weight, grad_bias, None

    return MaxPooledLogits


def _lean_pairs(model: Any) -> list[tuple[Any, Any]]:
    """Every (MLM transformer, SpladePooling(max, relu)) that follow each other in one of the model's
    sequences, whose transformer ends in a linear decoder with a bias."""
    torch = require("torch", "train", "Training")
    pairs = []
    for sequence in model.modules():
        if not isinstance(sequence, torch.nn.Sequential):
            continue
        members = list(sequence)
        for transformer, pooling in zip(members, members[1:], strict=False):
            if not is_max_relu_pooling(pooling):
                continue
            decoder = decoder_of(transformer)
            if decoder is not None:
                pairs.append((decoder, pooling))
    return pairs


@contextmanager
def lean_splade_head(model: Any) -> Iterator[int]:
    """Within the block, ``model``'s plain SPLADE heads compute as the module's docstring says; yields how
    many heads were switched (0: the model keeps its own computation)."""
    max_pooled_logits = _max_pooled_logits()
    pairs = _lean_pairs(model)

    def pooled(decoder: Any) -> Any:
        def forward(features: dict[str, Any], **_: Any) -> dict[str, Any]:
            features["sentence_embedding"] = max_pooled_logits.apply(
                features["token_embeddings"], decoder.weight, decoder.bias, features["attention_mask"])
            return features
        return forward

    for decoder, pooling in pairs:
        decoder.forward = lambda hidden: hidden  # the transformer hands its last hidden states on
        pooling.forward = pooled(decoder)
    try:
        yield len(pairs)
    finally:
        for decoder, pooling in pairs:  # the instance attributes go: the classes' own forward again
            del decoder.forward
            del pooling.forward
