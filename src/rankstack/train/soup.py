"""A "model soup" (Wortsman et al., 2022): the uniform average of the weights of several split
cross-encoders distilled from one teacher into one layout. Runs that started from the same copy of the
teacher stay in one basin of the loss, so their average is a model of its own, often better than each,
at no cost at query time."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rankstack.errors import RankstackError
from rankstack.models.loading import is_split_cross_encoder, resolve_model_location
from rankstack.models.split import SplitCrossEncoder
from rankstack.train._run import save_with_card
from rankstack.train.arguments import SoupSettings

logger = logging.getLogger(__name__)


def _card(location: str) -> dict[str, Any]:
    path = Path(location) / "rankstack_training.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def average_split_models(dataset_dir: str | Path | None, output: str | Path, index: Any,
                         args: SoupSettings) -> dict[str, Any]:
    """Average ``args.models`` (split cross-encoders of one layout and shape) into ``output``; returns its
    card. With ``dataset_dir`` (and its ``index``), the soup is scored on the dev queries its ingredients
    held out (same split, seed and first stage as the first one's training), as a trained model would be.
    ``args.query_reads_document`` makes the soup's query read the document in the split layers (a mask,
    not a weight: ingredients trained either way can serve so)."""
    started = time.perf_counter()
    if len(args.models) < 2:
        raise RankstackError(f"a soup needs at least two models, got {len(args.models)}")
    locations = [str(resolve_model_location(m)) for m in args.models]
    for location in locations:
        if not is_split_cross_encoder(location):
            raise RankstackError(f"{location} is not a split cross-encoder (rankstack train split writes one); "
                                 f"only split models of one layout can be averaged")
    first = _average(locations)
    if args.query_reads_document:
        first.layout = replace(first.layout, query_reads_document=True)
    cards = [_card(location) for location in locations]
    teachers = sorted({str(card.get("distilled_from")) for card in cards if card.get("distilled_from")})
    if len(teachers) > 1:  # a moved teacher is spelt differently, so this warns rather than refuses
        logger.warning("the models' cards name %d teachers (%s); a soup of different teachers' students is "
                       "rarely better than either", len(teachers), ", ".join(teachers))
    card = {"kind": "split-cross-encoder", "head": "segment-similarity", "soup_of": locations,
            "distilled_from": teachers[0] if len(teachers) == 1 else teachers,
            "layout": {**asdict(first.layout), "layers": len(first.encoder.encoder.layer)},
            "dataset": cards[0].get("dataset"), "split": cards[0].get("split"), "miner": cards[0].get("miner"),
            "ingredients_dev_ndcg@10": [card.get("dev_ndcg@10") for card in cards],
            "parameters": {"averaging": "uniform"}, "train_seconds": round(time.perf_counter() - started, 1)}
    if dataset_dir is not None:
        card["dev_ndcg@10"] = _dev_ndcg(first, cards[0], dataset_dir, index)
    save_with_card(first, Path(output), card)
    return card


def _average(locations: list[str]) -> SplitCrossEncoder:
    """The first model, holding the uniform average of every model's weights; refuses models of another
    layout, tokenizer or shape. A running sum: the first model, the sum and one other are held at a time,
    however many are averaged."""
    first = SplitCrossEncoder.load(locations[0])
    reference = first.state_dict()
    total = {key: value.double() for key, value in reference.items() if value.is_floating_point()}
    for location in locations[1:]:
        model = SplitCrossEncoder.load(location)
        if model.layout != first.layout:
            raise RankstackError(f"{location} was split as {asdict(model.layout)}, {locations[0]} as "
                                 f"{asdict(first.layout)}; average models of one layout only")
        if model.tokenizer.get_vocab() != first.tokenizer.get_vocab():
            raise RankstackError(f"{location} and {locations[0]} have different tokenizers; average models "
                                 f"split from one teacher only")
        state = model.state_dict()
        different = [k for k in reference if k not in state or state[k].shape != reference[k].shape]
        if different or state.keys() != reference.keys():
            raise RankstackError(f"{location} and {locations[0]} differ in shape ({', '.join(different[:3])}); "
                                 f"average models split from one teacher only")
        for key in total:
            total[key] += state[key].double()
        del model, state
    first.load_state_dict({key: (total[key] / len(locations)).to(value.dtype) if key in total else value
                           for key, value in reference.items()})
    return first


def _dev_ndcg(model: SplitCrossEncoder, trained: dict[str, Any], dataset_dir: str | Path, index: Any) -> Any:
    from rankstack.io import BeirDataset
    from rankstack.train.cross_encoder import dev_reranking
    from rankstack.train.data import dev_qrels, dev_queries

    if index is None:
        raise RankstackError("scoring a soup on dev needs the collection's index as well as its directory")
    split, miner = trained.get("split", "train"), trained.get("miner", "bm25%30")
    parameters = trained.get("parameters") or {}
    seed = parameters.get("seed", 42)
    fraction = parameters.get("dev_fraction", 0.1)  # cards before it was recorded: the trainer's default
    dataset = BeirDataset.open(dataset_dir)
    dev = dev_queries(dataset, index, split, dev_fraction=fraction, seed=seed)  # the ingredients' held-out queries
    ndcg = dev_reranking(index, dev, dev_qrels(dataset, split, dev), miner)
    return {"soup": ndcg(model.eval()), "first_stage": miner, "dev_queries": len(dev)}
