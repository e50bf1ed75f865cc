"""Running a sentence-transformers model's transformer under ONNX Runtime, in fp32 or with int8 weights.

Only the transformer (the ``Transformer`` module that sentence-transformers puts first in a bi-encoder or a
cross-encoder) moves: tokenization, batching, length sorting, pooling, normalisation and score activations
stay sentence-transformers' own, so the ONNX model is a drop-in for exactly the computation it replaces.

The export (``torch.onnx``, eager attention so that ONNX Runtime's transformer optimizer can fuse attention,
layer norms and GELU) and the int8 quantisation (dynamic: int8 weights per output channel, activations
quantised per batch) are done once per model and kept in rankstack's cache under a key of the model's files,
the recipe and the library versions. A cache entry is written into a temporary folder and renamed into
place, so a crash never leaves half a model that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankstack._cache_dir import cache_root
from rankstack._optional import require
from rankstack.models.hardware import DeviceError

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1  # bump when the export or quantisation recipe changes: old cache entries are then not used
_OUTPUTS = ("last_hidden_state", "logits")  # what a bi-encoder's / a cross-encoder's transformer returns
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _transformer_of(model: Any) -> Any:
    first = model[0]
    if type(first).__name__ != "Transformer" or not hasattr(first, "model"):
        raise DeviceError(f"this model cannot be exported to backend=onnx: its first module is "
                          f"{type(first).__name__}, not a transformer; use backend=torch")
    return first


def _output_name(transformer: Any) -> str:
    config = getattr(transformer, "modality_config", {}).get("text", {"method": "forward",
                                                                      "method_output_name": "last_hidden_state"})
    output = config.get("method_output_name")
    output = output[0] if isinstance(output, (list, tuple)) and len(output) == 1 else output
    if config.get("method") != "forward" or output not in _OUTPUTS:
        raise DeviceError(f"this model cannot be exported to backend=onnx: its transformer returns {output!r} "
                          f"from {config.get('method')!r}, not one of {', '.join(_OUTPUTS)}; use backend=torch")
    return str(output)


def _model_files_key(transformer: Any) -> str:
    """A digest of what the transformer was loaded from: its files (path, size, mtime) where it came from a
    folder, its weights themselves where it did not (a model built in memory)."""
    torch = require("torch", "dense", "ONNX export")
    digest = hashlib.sha256()
    source = getattr(getattr(transformer.model, "config", None), "_name_or_path", "") or ""
    folder = Path(source)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        digest.update(str(folder.resolve()).encode())
    else:
        for name, tensor in sorted(transformer.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def _cache_key(transformer: Any, output: str, precision: str) -> str:
    import onnxruntime
    torch = require("torch", "dense", "ONNX export")
    parts = {"model": _model_files_key(transformer), "output": output, "precision": precision,
             "recipe": RECIPE_VERSION, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
             "max_seq_length": int(getattr(transformer, "max_seq_length", 0) or 0)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _tokenize(transformer: Any, texts: list[str]) -> Any:
    method = getattr(transformer, "preprocess", None) or getattr(transformer, "tokenize", None)
    return method(texts) if method is not None else {}


def _input_names(transformer: Any) -> list[str]:
    probe = _tokenize(transformer, ["probe text"])
    names = [name for name in _INPUTS if name in probe]
    return names or ["input_ids", "attention_mask"]


def _export(transformer: Any, output: str, inputs: list[str], target: Path) -> None:
    torch = require("torch", "dense", "ONNX export")
    hf_model = transformer.model
    set_attention = getattr(hf_model, "set_attn_implementation", None)
    if set_attention is not None:
        try:
            set_attention("eager")  # the pattern ONNX Runtime's optimizer fuses into one Attention node
        except (ValueError, TypeError, AttributeError):
            logger.debug("eager attention not available; exporting the model's own attention")

    class Wrapped(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *tensors: Any) -> Any:
            return getattr(self.inner(**dict(zip(inputs, tensors, strict=True)), return_dict=True), output)

    probe = _tokenize(transformer, ["a probe text for the export", "a second, longer probe text for it"])
    example = tuple(probe[name].to(torch.long) for name in inputs)
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "tokens"}
    import warnings
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes treated as constants: checked below
        torch.onnx.export(Wrapped().eval(), example, str(target), input_names=inputs, output_names=[output],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _optimize(source: Path, target: Path, config: Any) -> None:
    """Fuse attention, layer norms and GELU where ONNX Runtime's transformer optimizer knows the model."""
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden)
        optimized.save_model_to_file(str(target))
    except Exception as error:  # noqa: BLE001 - an unfused graph is still correct, only slower
        logger.info("ONNX Runtime's optimizer did not fuse this model (%s); using the plain export", error)
        shutil.copyfile(source, target)


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    # The quantiser advises "pre-processing" (graph optimisation, shape inference) unless the model carries
    # the tag that step writes. Both are done: the fusion above, and quantize_dynamic infers shapes on load;
    # so the graph is tagged instead of the user reading the advice at every build.
    model = onnx.load(str(source))
    add_pre_process_metadata(model)
    onnx.save(model, str(source))
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _build(transformer: Any, output: str, precision: str, inputs: list[str], folder: Path) -> None:
    """Export, fuse and (for int8) quantise into ``folder``/model.onnx, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _export(transformer, output, inputs, staging / "exported.onnx")
        _optimize(staging / "exported.onnx", staging / "fused.onnx", getattr(transformer.model, "config", None))
        if precision == "int8":
            _quantize(staging / "fused.onnx", staging / "model.onnx")
        else:
            (staging / "fused.onnx").rename(staging / "model.onnx")
        for leftover in staging.iterdir():
            if leftover.name != "model.onnx":
                leftover.unlink()
        (staging / "inputs.json").write_text(json.dumps({"inputs": inputs, "output": output}), encoding="utf-8")
        try:
            os.replace(staging, folder)
        except OSError:  # another process finished the same export first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def texts_per_batch(precision: str, requested: int) -> int:
    """How many texts go through the ONNX model at once: ``requested``, except under int8, which runs every
    text alone.

    Dynamic quantisation scales each activation tensor by its own range, so in a batch a text's vector (or a
    pair's score) would depend on its neighbours, and so on how batches are cut: by the thread count, by the
    service's request batching. On SciFact queries that moved a coordinate by up to 0.033 and the bundled
    dense stage's dev nDCG@10 by 0.01 between one and two threads. Alone, a text gets the same output in an
    evaluation, in the service and on any core count, closer to fp32 (mean cosine 0.9936 against 0.9928
    batched, 200 queries), and long texts lose no time to padding (300 abstracts: 12.2 s alone, 16.8 s in
    batches of 32, one core); short queries cost about 1.4 times as much."""
    return 1 if precision == "int8" else requested


def cpu_workers() -> int:
    """The threads the CPU work may use: torch's setting (which follows the cores this process may run on)."""
    torch = require("torch", "dense", "backend=onnx")
    return max(1, int(torch.get_num_threads()))


def _session(path: Path, threads: int) -> Any:
    ort = require("onnxruntime", "fast", "backend=onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Sessions:
    """One model, two ways to run it: ``latency`` spreads one batch over every core (a query, a few pairs);
    ``throughput`` runs one batch per core, several batches at once from ``in_parallel``'s threads, which on
    two AVX2 cores measured about 10% more docs/s than splitting each batch's kernels across the cores."""

    latency: Any
    throughput: Any
    inputs: list[str]
    output: str


_PARALLEL = threading.local()


def in_parallel(call: Callable[[list[Any]], Sequence[Any]], items: list[Any], sizes: list[int],
                batch_size: int) -> list[Any]:
    """``call`` over ``items`` in length-sorted batches spread over the cores, one thread per core, each
    running whole batches; the results in ``items``' order. Small inputs run in the calling thread."""
    workers = min(cpu_workers(), max(1, len(items) // 4))
    if workers == 1:
        return list(call(items))
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    step = max(1, min(batch_size, -(-len(items) // workers)))
    batches = [order[start:start + step] for start in range(0, len(order), step)]
    groups = [[i for batch in batches[w::workers] for i in batch] for w in range(workers)]

    def run(group: list[int]) -> Sequence[Any]:
        _PARALLEL.active = True
        try:
            return call([items[i] for i in group])
        finally:
            _PARALLEL.active = False

    results: list[Any] = [None] * len(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="rankstack-onnx") as pool:
        for group, values in zip(groups, pool.map(run, groups), strict=True):
            for position, value in zip(group, values, strict=True):
                results[position] = value
    return results


def onnx_sessions_for(transformer: Any, precision: str) -> Sessions:
    """The ONNX Runtime sessions for ``transformer`` in ``precision`` (``fp32`` or ``int8``), exporting it on
    first use."""
    require("onnxruntime", "fast", "backend=onnx")
    output = _output_name(transformer)
    folder = cache_root() / "onnx" / _cache_key(transformer, output, precision)
    for attempt in (1, 2):
        if not (folder / "model.onnx").is_file():
            logger.info("exporting the model to ONNX (%s), once; kept in %s", precision, folder)
            try:
                _build(transformer, output, precision, _input_names(transformer), folder)
            except DeviceError:
                raise
            except Exception as error:  # noqa: BLE001 - any export failure becomes one clear message
                raise DeviceError(f"this model cannot be exported to backend=onnx ({type(error).__name__}: "
                                  f"{str(error)[:200]}); use backend=torch") from None
        try:
            recorded = json.loads((folder / "inputs.json").read_text(encoding="utf-8"))
            return Sessions(_session(folder / "model.onnx", cpu_workers()), _session(folder / "model.onnx", 1),
                            list(recorded["inputs"]), str(recorded["output"]))
        except Exception:  # a damaged cache entry (disk trouble, a hand edit): build it again once
            if attempt == 2:
                raise
            logger.warning("the cached ONNX model in %s could not be loaded; exporting it again", folder)
            shutil.rmtree(folder, ignore_errors=True)
    raise AssertionError("unreachable")


def use_onnx(model: Any, precision: str) -> None:
    """Make ``model`` (a SentenceTransformer or CrossEncoder) run its transformer under ONNX Runtime."""
    torch = require("torch", "dense", "backend=onnx")
    transformer = _transformer_of(model)
    sessions = onnx_sessions_for(transformer, precision)
    module_output = transformer.module_output_name if hasattr(transformer, "module_output_name") else \
        "token_embeddings"

    def forward(features: dict[str, Any], **_: Any) -> dict[str, Any]:
        feeds = {name: features[name].detach().cpu().numpy().astype(np.int64, copy=False)
                 for name in sessions.inputs}
        session = sessions.throughput if getattr(_PARALLEL, "active", False) else sessions.latency
        features[module_output] = torch.from_numpy(session.run([sessions.output], feeds)[0])
        return features

    transformer.forward = forward  # the instance's forward: nn.Module.__call__ looks it up on the instance
    transformer.onnx_precision = precision
