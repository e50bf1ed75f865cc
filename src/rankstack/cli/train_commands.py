"""The train command group: fine-tune rankers on relevance judgements."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rankstack._console import progress_bar, stderr

# Settings that came out of the split-model experiments. They stay available, but marked: the recipe and
# its measured figures are in docs/training.md, and the defaults of `train split` are the plain recipe.
EXPERIMENTAL = "Experimental (see docs/training.md for the measured recipe)"


def _experimental(**settings: Any) -> Any:
    return typer.Option(rich_help_panel=EXPERIMENTAL, **settings)


train_app = typer.Typer(no_args_is_help=True, help="Fine-tune rankers on a collection's relevance judgements.")


def _mining_index(dataset: Path) -> Any:
    """The collection's BM25 index (built once and cached), which mines negatives and dev candidates."""
    from rankstack.index.cache import open_or_build
    from rankstack.io import BeirDataset

    with progress_bar("indexing for negative mining") as advance:
        opened, _ = open_or_build(BeirDataset.open(dataset).root, None, advance)
    return opened


@train_app.command("bi-encoder")
def train_bi_encoder_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    base: Annotated[str, typer.Option(help="Starting model: local path or Hugging Face id.")] = "default",
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    learning_rate: Annotated[float, typer.Option()] = 2e-5,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
    teacher: Annotated[str | None, typer.Option(help="Cross-encoder whose score margins are distilled "
                                                "(Margin-MSE): a directory from `rankstack train cross-encoder` "
                                                "or a Hugging Face id.")] = None,
    negatives: Annotated[int, typer.Option(min=1, help="Mined hard negatives per positive.")] = 1,
    pseudo_queries: Annotated[int, typer.Option(min=0, help="With --teacher, also train on this many unlabelled "
                                                "lists: sampled documents' titles as queries, labelled by the "
                                                "teacher.")] = 0,
    distil_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the teacher's margins next to the "
                                                 "contrastive loss.")] = 1.0,
) -> None:
    """Fine-tune a bi-encoder (in-batch + mined hard negatives, distilled from a cross-encoder with --teacher);
    resumes from checkpoints if interrupted."""
    from rankstack._console import ProgressBars
    from rankstack.train.arguments import BiEncoderTraining
    from rankstack.train.bi_encoder import train_bi_encoder

    if pseudo_queries and not teacher:
        raise typer.BadParameter("unlabelled lists need a teacher to label them; add --teacher CROSS_ENCODER_DIR",
                                 param_hint="--pseudo-queries")
    args = BiEncoderTraining(base=base, split=split, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             seed=seed, miner=miner, max_steps=max_steps, device=device, teacher=teacher,
                             negatives=negatives, pseudo_queries=pseudo_queries, distil_weight=distil_weight)
    index = _mining_index(dataset)
    with ProgressBars() as bars:
        card = train_bi_encoder(dataset_dir=dataset, output=output, index=index, args=args, progress=bars)
    stderr.print(f"saved {card['kept']} model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}")



@train_app.command("cross-encoder")
def train_cross_encoder_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    base: Annotated[str, typer.Option(help="Starting transformer: local path or Hugging Face id.")] = "default",
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 8,
    learning_rate: Annotated[float, typer.Option()] = 3e-5,
    negatives: Annotated[int, typer.Option(min=1, help="Mined hard negatives per positive.")] = 7,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per (query, document) input.")] = 256,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives and gives the dev candidates.")]
    = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
) -> None:
    """Fine-tune a cross-encoder reranker (listwise loss over mined hard negatives); resumes if interrupted."""
    from rankstack.train.arguments import CrossEncoderTraining
    from rankstack.train.cross_encoder import train_cross_encoder

    args = CrossEncoderTraining(base=base, split=split, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, seed=seed, miner=miner, negatives=negatives,
                                max_length=max_length, max_steps=max_steps, device=device)
    card = train_cross_encoder(dataset_dir=dataset, output=output, index=_mining_index(dataset), args=args)
    stderr.print(f"saved {card['kept']} model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}")



@train_app.command("sparse")
def train_sparse_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained SPLADE model.")],
    base: Annotated[str, typer.Option(help="Starting transformer: local path or Hugging Face id.")] = "default",
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=2, help="Queries per step.")] = 16,
    learning_rate: Annotated[float, typer.Option()] = 2e-4,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per text.")] = 256,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives and gives the dev candidates.")]
    = "bm25%30",
    dev_depth: Annotated[int, typer.Option(min=0, help="Miner's candidates per dev query scored for the dev "
                                           "figure (0: no dev figure).")] = 30,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    document_regularizer: Annotated[float, typer.Option(min=0.0, help="FLOPS weight on documents.")] = 1e-3,
    query_regularizer: Annotated[float, typer.Option(min=0.0, help="FLOPS weight on queries.")] = 1e-3,
    head_bias: Annotated[float, typer.Option(help="Starting bias of a new MLM head (negative: sparse from the "
                                             "start).")] = -8.0,
    inference_free_queries: Annotated[bool, typer.Option(
        "--inference-free-queries", help="Weigh queries with a learnt table of token weights: no transformer at "
        "query time.")] = False,
    negatives: Annotated[int, typer.Option(min=1, help="Mined hard negatives per positive.")] = 5,
    teacher: Annotated[str | None, typer.Option(help="Cross-encoder whose score margins are distilled too "
                                                "(Margin-MSE): a directory from `rankstack train cross-encoder` "
                                                "or a Hugging Face id.")] = None,
    distil_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the teacher's margins next to the "
                                                 "contrastive loss.")] = 1.0,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
) -> None:
    """Train a SPLADE learned sparse retriever (ranking loss + FLOPS regulariser, distilled from a cross-encoder
    with --teacher); resumes if interrupted."""
    from rankstack._console import ProgressBars
    from rankstack.train.arguments import SparseTraining
    from rankstack.train.sparse import train_sparse

    args = SparseTraining(base=base, split=split, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          max_length=max_length, seed=seed, miner=miner, dev_depth=dev_depth, max_steps=max_steps,
                          document_regularizer=document_regularizer, query_regularizer=query_regularizer,
                          head_bias=head_bias, inference_free_queries=inference_free_queries, device=device,
                          negatives=negatives, teacher=teacher, distil_weight=distil_weight)
    index = _mining_index(dataset)
    with ProgressBars() as bars:
        card = train_sparse(dataset_dir=dataset, output=output, index=index, args=args, progress=bars)
    stderr.print(f"saved a SPLADE model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}; active terms per document {card['active_terms_per_doc']}")


@train_app.command("late-interaction")
def train_late_interaction_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    base: Annotated[str, typer.Option(help="Starting transformer: local path or Hugging Face id; a bi-encoder "
                                      "trained with `rankstack train bi-encoder --teacher` measured best.")]
    = "default",
    dimension: Annotated[int, typer.Option(min=8, help="Token vector dimension (64: 64 bytes per stored token).")]
    = 64,
    query_tokens: Annotated[int, typer.Option(min=4, help="Query width; short queries are padded with [MASK] "
                                              "tokens (query augmentation).")] = 32,
    document_tokens: Annotated[int, typer.Option(min=8, help="Longest document, in tokens.")] = 180,
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    batch_size: Annotated[int, typer.Option(min=2)] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    negatives: Annotated[int, typer.Option(min=1, help="Mined hard negatives per positive.")] = 1,
    teacher: Annotated[str | None, typer.Option(help="Cross-encoder whose score margins are distilled too.")] = None,
    distil_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the teacher's margins next to the "
                                                 "contrastive loss.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
) -> None:
    """Train a late-interaction (ColBERT) model for colbert(model=DIR); resumes from checkpoints if interrupted."""
    from rankstack._console import ProgressBars
    from rankstack.train.arguments import LateInteractionTraining
    from rankstack.train.late_interaction import train_late_interaction

    args = LateInteractionTraining(base=base, dimension=dimension, query_tokens=query_tokens,
                                   document_tokens=document_tokens, split=split, epochs=epochs,
                                   batch_size=batch_size, learning_rate=learning_rate, negatives=negatives,
                                   teacher=teacher, distil_weight=distil_weight, seed=seed, miner=miner,
                                   max_steps=max_steps, device=device)
    index = _mining_index(dataset)
    with ProgressBars() as bars:
        card = train_late_interaction(dataset_dir=dataset, output=output, index=index, args=args, progress=bars)
    stderr.print(f"saved {card['kept']} model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}")


@train_app.command("distil")
def train_distil_command(
    teacher: Annotated[str, typer.Argument(help="Trained cross-encoder to compress: local path or Hugging Face id.")],
    dataset: Annotated[Path, typer.Argument(help="BEIR directory whose training queries drive the distillation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the smaller model.")],
    keep_layers: Annotated[int, typer.Option(min=1, help="Transformer layers the student keeps.")] = 3,
    split: Annotated[str, typer.Option(help="Qrels split whose queries are used.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    negatives: Annotated[int, typer.Option(min=1, help="Mined documents per positive scored by the teacher.")] = 7,
    max_length: Annotated[int, typer.Option(min=16)] = 256,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines the documents to distil on.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the hidden-state loss against the "
                                                 "score margins (0: margins only).")] = 20.0,
    pseudo_queries: Annotated[int, typer.Option(min=0, help="Also distil on this many unlabelled lists: sampled "
                                                "documents' titles as queries, with the miner's candidates.")] = 0,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
) -> None:
    """Compress a cross-encoder: drop layers, then distil the teacher's score margins and hidden states into it."""
    from rankstack.train.arguments import DistillationTraining
    from rankstack.train.compress import distil_cross_encoder

    args = DistillationTraining(teacher=teacher, keep_layers=keep_layers, split=split, epochs=epochs,
                                batch_size=batch_size, learning_rate=learning_rate, seed=seed, miner=miner,
                                negatives=negatives, max_length=max_length, max_steps=max_steps,
                                hidden_weight=hidden_weight, pseudo_queries=pseudo_queries, device=device)
    card = distil_cross_encoder(dataset_dir=dataset, output=output, index=_mining_index(dataset), args=args)
    stderr.print(f"saved a {len(card['layers']['kept'])}-layer student to {output} in {card['train_seconds']:.0f} s; "
                 f"dev nDCG@10 {card['dev_ndcg@10']}")


@train_app.command("split")
def train_split_command(
    teacher: Annotated[str, typer.Argument(help="Trained cross-encoder (rankstack train cross-encoder) to split.")],
    dataset: Annotated[Path, typer.Argument(help="BEIR directory whose training queries drive the distillation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the split model.")],
    local_layers: Annotated[int, typer.Option(min=1, help="Lower layers that read query and document apart "
                                              "(their document side is computed before any query).")] = 3,
    query_tokens: Annotated[int, typer.Option(min=3, help="Longest query, in tokens; documents start here.")] = 64,
    document_tokens: Annotated[int, typer.Option(min=2, help="Longest document, in tokens.")] = 224,
    split: Annotated[str, typer.Option(help="Qrels split whose queries are used.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    list_size: Annotated[int, typer.Option(min=2, help="Documents per training list: a positive and the miner's "
                                           "best unjudged others.")] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines the documents to distil on.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    pseudo_queries: Annotated[int, typer.Option(min=0, help="Also distil on this many unlabelled lists (sampled "
                                                "documents give the queries).")] = 0,
    pseudo_query_source: Annotated[str, _experimental(help="What of a sampled document is its pseudo-query: "
                                                     "'title', or a random 'sentence' of its text.")] = "title",
    hidden_weight: Annotated[float, _experimental(min=0.0, help="Weight of the loss on the teacher's token states "
                                                 "(last split layer and every joint layer) next to the score "
                                                 "margins (0: margins only).")] = 1.0,
    init: Annotated[str | None, _experimental(help="Start from this split model (same layout) instead of a "
                                             "copy of the teacher: a second round of distillation.")] = None,
    prune_stopwords: Annotated[bool, _experimental(help="Drop documents' stopwords and punctuation after the split "
                                                  "layers: the joint layers read fewer tokens.")] = False,
    query_reads_document: Annotated[bool, _experimental(help="Let the query's tokens read the document's in the "
                                                       "split layers too (the document's still read only "
                                                       "the document, so it is still precomputed).")] = False,
) -> None:
    """Make a cross-encoder faster by splitting its lower layers by segment (PreTTR), distilled from itself."""
    from rankstack.train.arguments import SplitTraining
    from rankstack.train.split import train_split_cross_encoder

    args = SplitTraining(teacher=teacher, init=init, local_layers=local_layers, query_tokens=query_tokens,
                         document_tokens=document_tokens, prune=prune_stopwords,
                         query_reads_document=query_reads_document, split=split, miner=miner, list_size=list_size,
                         pseudo_queries=pseudo_queries, pseudo_query_source=pseudo_query_source, seed=seed,
                         epochs=epochs, learning_rate=learning_rate, max_steps=max_steps,
                         hidden_weight=hidden_weight)
    card = train_split_cross_encoder(dataset_dir=dataset, output=output, index=_mining_index(dataset), args=args)
    stderr.print(f"saved a split cross-encoder ({local_layers} of {card['layout']['layers']} layers split) to "
                 f"{output} in {card['train_seconds']:.0f} s; dev nDCG@10 {card['dev_ndcg@10']}")


@train_app.command("soup", rich_help_panel=EXPERIMENTAL)
def train_soup_command(
    models: Annotated[list[str], typer.Argument(help="Split cross-encoders of one layout, distilled from one "
                                                "teacher (rankstack train split).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the averaged model.")],
    dataset: Annotated[Path | None, typer.Option(help="BEIR directory the models were trained on: score the "
                                                 "soup on their held-out dev queries.")] = None,
    query_reads_document: Annotated[bool, typer.Option(help="Let the soup's query read the document in the "
                                                       "split layers, however its ingredients were trained "
                                                       "(documents are still precomputed).")] = False,
) -> None:
    """Experimental: average the weights of several split cross-encoders into one (a model soup)."""
    from rankstack.train.arguments import SoupSettings
    from rankstack.train.soup import average_split_models

    args = SoupSettings(models=tuple(models), query_reads_document=query_reads_document)
    card = average_split_models(dataset_dir=dataset, output=output,
                                index=_mining_index(dataset) if dataset else None, args=args)
    stderr.print(f"saved the average of {len(models)} split cross-encoders to {output}; "
                 f"dev nDCG@10 {card.get('dev_ndcg@10', 'not scored (no --dataset)')}")
