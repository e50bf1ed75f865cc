"""``rankstack adapt``: adapt a bi-encoder (and optionally a reranker) to a corpus without judgements."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from rankstack._console import ProgressBars, progress_bar, stderr, stdout
from rankstack.cli._app import app


@app.command("adapt")
def adapt_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus file or BEIR directory (only its documents are read).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the models and adapt_card.json.")],
    teacher: Annotated[str | None, typer.Option(help="Cross-encoder that labels the candidates: local directory or "
                                                "Hugging Face id (default: the best one in the local Hugging Face "
                                                "cache, else labels from the hybrid; see docs/adapt.md).")] = None,
    labels: Annotated[str, typer.Option(help="What labels the candidates: teacher, hybrid (BM25 and the bi-encoder, "
                                        "no teacher needed), or auto: the teacher when one is "
                                        "given or cached, else hybrid.")] = "auto",
    budget: Annotated[str, typer.Option(help="Time for the whole command, e.g. 30m, 90s, 1h.")] = "30m",
    source: Annotated[str, typer.Option(help="What of a document is its pseudo-query: sentence (inverse cloze), "
                                        "keywords, span or title.")] = "sentence",
    generator: Annotated[str | None, typer.Option(help="Write the queries with a generator instead: a local seq2seq "
                                                  "model directory or an OpenAI-compatible endpoint URL.")] = None,
    generator_model: Annotated[str, typer.Option(help="The model name sent to a generator endpoint.")] = "default",
    reranker: Annotated[bool, typer.Option("--reranker", help="Also distil a reranker from the teacher.")] = False,
    base: Annotated[str, typer.Option(help="Bi-encoder to adapt: local path or Hugging Face id.")] = "default",
    hybrid: Annotated[str, typer.Option(help="First stage mining candidates: rrf (rrf(bm25,dense)) or zscore "
                                        "(linear(bm25,dense,norm=zscore)).")] = "rrf",
    queries: Annotated[int | None, typer.Option(min=20, help="Documents sampled to give pseudo-queries (default: as "
                                                "many as the budget allows here, up to 1,000).")] = None,
    depth: Annotated[int, typer.Option(min=2, help="Candidates per pseudo-query scored by the teacher.")] = 16,
    negatives: Annotated[int, typer.Option(min=1, help="Candidates trained on per pseudo-query.")] = 4,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: Annotated[float, typer.Option()] = 2e-5,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Adapt to a corpus with no judgements: pseudo-queries, hybrid mining, teacher labels, MarginMSE training."""
    from rankstack.index.cache import open_or_build
    from rankstack.train.adapt import AdaptSettings, adapt, parse_budget

    settings = AdaptSettings(teacher=teacher, labels=labels, base=base, source=source, generator=generator,
                             generator_model=generator_model, queries=queries, depth=depth, negatives=negatives,
                             hybrid=hybrid, budget_seconds=parse_budget(budget), epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, reranker=reranker)
    with progress_bar("indexing the corpus") as advance:
        index, _ = open_or_build(corpus, None, advance)
    # the trainer prints its summary with print(); stdout carries only the suggested pipeline
    with ProgressBars() as bars, contextlib.redirect_stdout(sys.stderr):
        card = adapt(corpus, output, settings, index=index, progress=bars)
    check = card["self_check"]
    labels = "the teacher" if card["teacher"]["labels"] == "teacher" else "the hybrid's labels"
    stderr.print(f"self-check ({check['heldout_queries']} held-out pseudo-queries, agreement with {labels}, "
                 f"nDCG@10): unadapted {check['base']}, adapted {check['adapted']}"
                 + (f", reranker {check['reranker']}" if "reranker" in check else "") + f". {check['reason']}")
    stderr.print(f"saved to {output} in {card['seconds']['total']:.0f} s")
    stdout.print(card["suggested_pipeline"], highlight=False, soft_wrap=True)
