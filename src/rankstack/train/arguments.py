"""The arguments of each trainer, one frozen dataclass per trainer, with the defaults the CLI also uses.

A trainer is called as ``train_x(dataset_dir, output, index, XTraining(...))``; the dataclasses import
nothing heavy, so building one costs nothing before the trainer's own imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class _CommonTraining:
    """What every trainer takes alike (each class below adds its own and may change a default)."""

    split: str = "train"
    miner: str = "bm25%30"
    dev_fraction: float = 0.1
    seed: int = 42
    """The qrels split trained on, the first stage mining hard negatives (and giving dev candidates), the
    share of the split's queries held out for model selection, and the seed of that draw and of training."""
    max_steps: int = -1
    device: str = "auto"
    """-1 runs every epoch, else training stops after this many steps; the device (``auto``: the GPU when
    torch sees one)."""


@dataclass(frozen=True, kw_only=True)
class BiEncoderTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.bi_encoder.train_bi_encoder`."""

    base: str = "default"
    """The starting model: local path or Hugging Face id."""
    teacher: str | None = None
    negatives: int = 1
    pseudo_queries: int = 0
    distil_weight: float = 1.0
    """Distillation (Margin-MSE, Hofstätter et al., 2020): a cross-encoder ``teacher`` scores each positive
    and its ``negatives`` mined negatives, and the model learns those score margins (weighted
    ``distil_weight``) next to the contrastive loss; ``pseudo_queries`` unlabelled lists (documents' titles
    as queries, their own document first) are added, labelled by the teacher alone."""
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    save_steps: int = 10
    """Optimisation: a checkpoint every ``save_steps`` steps."""


@dataclass(frozen=True, kw_only=True)
class CrossEncoderTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.cross_encoder.train_cross_encoder`."""

    base: str = "default"
    max_length: int = 256
    """The starting transformer (local path or Hugging Face id) and the tokens of one (query, document) input."""
    negatives: int = 7
    """Hard negatives the miner gives per positive."""
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 3e-5
    save_steps: int = 50
    precision: str = "auto"
    """Optimisation: a checkpoint every ``save_steps`` steps; bf16 autocast when ``precision`` resolves to
    bf16."""


@dataclass(frozen=True, kw_only=True)
class DistillationTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.compress.distil_cross_encoder`."""

    teacher: str
    keep_layers: int = 3
    max_length: int = 256
    """The cross-encoder compressed (local path or Hugging Face id), how many of its layers the student
    keeps, and the tokens of one (query, document) input."""
    negatives: int = 7
    pseudo_queries: int = 0
    """Data: the documents mined per positive, and how many unlabelled lists (titles as queries) are added."""
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 5e-5
    save_steps: int = 50
    precision: str = "auto"
    hidden_weight: float = 20.0
    """Optimisation: as for cross-encoders; ``hidden_weight`` weighs the hidden-state loss against the
    score margins (0: margins only)."""


@dataclass(frozen=True, kw_only=True)
class SplitTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.split.train_split_cross_encoder`."""

    teacher: str
    init: str | None = None
    """The unsplit cross-encoder distilled from; ``init``: a split model (same layout) to start from
    instead of a copy of the teacher."""
    local_layers: int = 3
    query_tokens: int = 64
    document_tokens: int = 224
    prune: bool = False
    query_reads_document: bool = False
    """The layout: lower layers reading query and document apart, the longest query and document in
    tokens, whether documents' stopwords are pruned after the split layers, whether the query reads the
    document in them."""
    list_size: int = 16
    pseudo_queries: int = 0
    pseudo_query_source: str = "title"
    """Data: lists of ``list_size`` mined documents (a positive and its best unjudged others), unlabelled
    lists added and what of a document is their query."""
    epochs: int = 1
    learning_rate: float = 5e-5
    save_steps: int = 100
    precision: str = "auto"
    hidden_weight: float = 1.0
    """Optimisation: one list per step; a checkpoint every ``save_steps`` steps; ``hidden_weight`` weighs
    the token-state loss next to the score margins."""


@dataclass(frozen=True, kw_only=True)
class SoupSettings:
    """Arguments of :func:`rankstack.train.soup.average_split_models`."""

    models: tuple[str, ...]
    query_reads_document: bool = False
    """The split cross-encoders averaged (one layout, one teacher), and whether the soup's query reads
    the document in the split layers (a mask, not a weight)."""


@dataclass(frozen=True, kw_only=True)
class SparseTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.sparse.train_sparse`."""

    base: str = "default"
    max_length: int = 256
    head_bias: float = -8.0
    """The starting transformer (local path or Hugging Face id), the tokens of one text, and the starting
    bias of the MLM head (negative: each text starts with only its best-matching terms active)."""
    dev_depth: int = 30
    """How many of the miner's candidates per dev query the dev figure retrieves among."""
    negatives: int = 5  # SciFact dev at 2e-4: 1 -> 0.7670, 3 -> 0.7931, 5 -> 0.8015 (docs/splade.md)
    teacher: str | None = None
    distil_weight: float = 1.0
    """Data: ``negatives`` mined hard negatives per positive, and an optional cross-encoder ``teacher`` whose
    score margins (its logits) the sparse dot products also fit, weighted ``distil_weight`` next to the
    contrastive loss (Margin-MSE, as SPLADE v2's distillation)."""
    epochs: int = 2  # SciFact dev at 5e-5: 1 -> 0.7131, 2 -> 0.7571, 3 -> 0.7506
    batch_size: int = 16
    learning_rate: float = 2e-4  # SciFact dev, two epochs: 5e-5 -> 0.7571, 1e-4 -> 0.7637, 2e-4 -> 0.7670
    save_steps: int = 25
    document_regularizer: float = 1e-3
    query_regularizer: float = 1e-3
    regularizer_warmup: float = 1 / 3
    """Optimisation: the FLOPS regulariser's weights on documents and
    queries, reached after the first ``regularizer_warmup`` of the steps (a quadratic ramp from 0)."""
    inference_free_queries: bool = False
    static_learning_rate: float = 1e-3
    """Queries weighed by a static table of token weights (no transformer at query time; no query
    regulariser), learnt at ``static_learning_rate``."""
    lean_head: bool = True
    """Compute the SPLADE head without holding every token's vocabulary logits (``train.splade_head``): the
    same gradients, less memory and time; False computes it the plain way (for comparison)."""


@dataclass(frozen=True, kw_only=True)
class LateInteractionTraining(_CommonTraining):
    """Arguments of :func:`rankstack.train.late_interaction.train_late_interaction`."""

    base: str = "default"
    dimension: int = 64
    query_tokens: int = 32
    document_tokens: int = 180
    """The starting transformer (local path or Hugging Face id), the token projection's dimension (64: 64 bytes
    per stored token in int8), the query width (short queries padded with [MASK] tokens: query augmentation)
    and the longest document in tokens."""
    negatives: int = 1
    teacher: str | None = None
    distil_weight: float = 1.0
    dev_first_stage: str = "bm25%30"
    """Data: ``negatives`` mined hard negatives per positive, an optional cross-encoder ``teacher`` whose
    score margins are distilled (weighted ``distil_weight`` next to the contrastive loss), and the first
    stage whose dev candidates the model reranks for selection (the seed also draws the projection)."""
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 5e-5
    save_steps: int = 50
    """Optimisation: a checkpoint every ``save_steps`` steps. The defaults (one negative, three epochs,
    5e-5) are the recipe that measured best on the dev queries (docs/late_interaction.md)."""
