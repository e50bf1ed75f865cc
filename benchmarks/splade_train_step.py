"""Time and memory of one SPLADE training step, the plain head against the lean one, in one run.

    python benchmarks/splade_train_step.py [--data DIR] [--batch 16] [--negatives 3] [--steps 3]
                                           [--max-length 256] [--variant NAME]

Both heads train the same model (``build_splade_model("default")``: the bundled MiniLM with an MLM head made
from its word embeddings) on the same batches: SciFact train queries, each with its judged document and
``--negatives`` other documents drawn at random (seeded), the default recipe's shape (16 queries, 5
negatives, 256 tokens). A step is what the trainer does: SpladeLoss (contrastive + FLOPS on both sides)
forward under the training precision ``training_runtime("auto")`` picks (bf16 autocast on CPUs with bf16
units), backward, AdamW. Each head runs in its own process (a clean peak memory: the process's maximum
resident set, model and data included); the first step is a warm-up and not timed. The losses of the two
heads are recorded step by step: the same gradients give the same losses, up to bf16 rounding.
Results go to results/splade_train_step_<cpu class>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from _common import require_data, result_machine, write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
HEADS = ("plain", "lean")


def batches(data: Path, batch: int, negatives: int, steps: int, seed: int) -> list[list[list[str]]]:
    """``steps`` batches of columns: queries, their judged documents, then ``negatives`` random documents."""
    from rankstack.io import BeirDataset, read_corpus

    dataset = BeirDataset.open(data)
    docs = {d.doc_id: d.contents for d in read_corpus(dataset.corpus_path)}
    queries = {q.query_id: q.text for q in dataset.queries()}
    judged = sorted({(q.query_id, q.doc_id) for q in dataset.qrels("train") if q.relevance > 0})
    rng = random.Random(seed)
    pairs = rng.sample(judged, batch * steps)
    ids = sorted(docs)
    out = []
    for step in range(steps):
        chosen = pairs[step * batch:(step + 1) * batch]
        columns = [[queries[q] for q, _ in chosen], [docs[d] for _, d in chosen]]
        columns += [[docs[rng.choice(ids)] for _ in chosen] for _ in range(negatives)]
        out.append(columns)
    return out


def run_head(head: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    from rankstack.models.hardware import training_runtime
    from rankstack.train.sparse import build_splade_model
    from rankstack.train.splade_head import lean_splade_head

    torch.manual_seed(args.seed)
    model = build_splade_model("default", max_length=args.max_length)
    model.train()
    loss = SpladeLoss(model, SparseMultipleNegativesRankingLoss(model), document_regularizer_weight=1e-3,
                      query_regularizer_weight=1e-3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    precision = training_runtime("auto").precision
    seconds, losses = [], []
    with lean_splade_head(model) if head == "lean" else nullcontext():
        for columns in batches(args.data, args.batch, args.negatives, args.steps + 1, args.seed):
            features = [model.preprocess(texts) for texts in columns]
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                total = sum(loss(features, None).values())
            total.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds.append(time.perf_counter() - started)
            losses.append(round(float(total), 5))
    return {"precision": precision, "torch_threads": torch.get_num_threads(), "warmup_seconds": seconds[0],
            "seconds_per_step": sum(seconds[1:]) / len(seconds[1:]), "step_seconds": seconds[1:],
            "losses": losses, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variant", default="default")
    parser.add_argument("--head", choices=HEADS, help=argparse.SUPPRESS)  # one head, in a child process
    args = parser.parse_args()
    require_data(args.data)
    if args.head:
        print(json.dumps(run_head(args.head, args)))
        return 0
    systems = {}
    for head in HEADS:
        print(f"training {args.steps + 1} steps with the {head} head ...", file=sys.stderr, flush=True)
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--head", head], capture_output=True,
                               text=True)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return child.returncode
        systems[head] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"  {systems[head]['seconds_per_step']:.2f} s a step, peak {systems[head]['peak_rss_bytes'] / 2**30:.2f} "
              f"GiB, losses {systems[head]['losses']}", file=sys.stderr)
    plain, lean = systems["plain"], systems["lean"]
    ratios = {"step_speedup": plain["seconds_per_step"] / lean["seconds_per_step"],
              "peak_memory_ratio": lean["peak_rss_bytes"] / plain["peak_rss_bytes"],
              "largest_loss_difference": max(abs(a - b) for a, b in zip(plain["losses"], lean["losses"],
                                                                        strict=True))}
    settings = {"model": "build_splade_model('default') (bundled MiniLM, MLM head from its word embeddings)",
                "batch_queries": args.batch, "negatives": args.negatives, "max_length": args.max_length,
                "timed_steps": args.steps, "seed": args.seed,
                "step": "SpladeLoss(SparseMultipleNegativesRankingLoss, FLOPS 1e-3 both sides) forward, backward, "
                        "AdamW 2e-4; each head in its own process"}
    path = write_result("splade_train_step", settings=settings, systems=systems, ratios=ratios, targets={},
                        targets_met={}, variant=args.variant, machine=result_machine())
    print(json.dumps(ratios, indent=2))
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
