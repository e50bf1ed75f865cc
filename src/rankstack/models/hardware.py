"""What the machine offers and what a model runs on: the CPU class, the device, the backend and precision.

``cpu_class()`` names the best instruction set that matters for the kernels (``amx-bf16``, ``avx512-bf16``,
``avx512-vnni``, ``avx2``, ``baseline``); every benchmark records it, and ``precision="auto"`` chooses by it:

* CPUs with AMX tiles (``amx-bf16``): torch under bf16 autocast, measured faster than fp32 there with scores
  very close to fp32's;
* every other CPU (AVX2, AVX-512 VNNI, and AVX-512 bf16 without AMX): ONNX Runtime with int8 weights in the
  transformer's linear layers, activations quantised per batch, where onnxruntime is installed (the ``fast``
  extra). Without AMX, VNNI's int8 dot products outrun the bf16 ones: on an AVX-512 bf16 AMD EPYC int8 encoded
  1.3x and reranked 1.2x faster than bf16 autocast. Without onnxruntime: torch, in bf16 where the CPU has
  bf16 units, else fp32;
* a CUDA GPU: torch in bf16 where the GPU supports it, else fp16.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from rankstack._optional import require
from rankstack.errors import RankstackError

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
CPU_CLASSES = ("amx-bf16", "avx512-bf16", "avx512-vnni", "avx2", "baseline", "unknown")
BF16_CPU_CLASSES = ("amx-bf16", "avx512-bf16")
TORCH_AUTO_CPU_CLASSES = ("amx-bf16",)  # auto runs torch bf16 here; ONNX int8 on the others when installed
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "onnx")
_CUDA_PATTERN = re.compile(r"cuda(?::(\d+))?")


class DeviceError(RankstackError):
    """A device, backend or precision that this machine or model cannot run."""


@cache
def _cpuinfo() -> tuple[str | None, frozenset[str]] | None:
    """The first processor's model name and flags from /proc/cpuinfo; None where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    model, flags = None, frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_flags() -> dict[str, Any]:
    """The CPU model and whether each instruction-set flag that matters for the kernels is present
    (flags are None where they cannot be read, e.g. not on Linux)."""
    info = _cpuinfo()
    if info is None:
        return {"model": platform.processor() or None, **{flag: None for flag in CPU_FLAGS}}
    model, flags = info
    return {"model": model, **{flag: flag in flags for flag in CPU_FLAGS}}


def cpu_class() -> str:
    """A short name for the CPU's best relevant instruction set (one of ``CPU_CLASSES``).

    ``RANKSTACK_CPU_CLASS`` overrides it, to measure a lesser class on a better machine: set it together with
    the kernel restrictions (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``,
    ``MKL_ENABLE_INSTRUCTIONS=AVX2``), so that ``auto`` and the recorded class follow the restriction."""
    forced = os.environ.get("RANKSTACK_CPU_CLASS", "").strip()
    if forced:
        if forced not in CPU_CLASSES:
            raise DeviceError(f"RANKSTACK_CPU_CLASS={forced} is not a CPU class; use one of {', '.join(CPU_CLASSES)}")
        return forced
    info = _cpuinfo()
    if info is None or not sys.platform.startswith("linux"):
        return "unknown"
    return classify_cpu(info[1])


def classify_cpu(flags: frozenset[str] | set[str]) -> str:
    """The class of a CPU with these /proc/cpuinfo flags: the best of them that the kernels use."""
    for flag, name in (("amx_bf16", "amx-bf16"), ("avx512_bf16", "avx512-bf16"), ("avx512_vnni", "avx512-vnni"),
                       ("avx2", "avx2")):
        if flag in flags:
            return name
    return "baseline"


def cpu_has_bf16_units() -> bool:
    return cpu_class() in BF16_CPU_CLASSES


def onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``; ``cuda`` or ``cuda:N``,
    checked against the GPUs torch sees, with an error that names the fix."""
    choice = (device or "auto").strip().lower()
    if choice == "cpu":
        return "cpu"
    if choice == "auto":
        torch = require("torch", "dense", "Neural models")
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = _CUDA_PATTERN.fullmatch(choice)
    if match is None:
        raise DeviceError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N (N a GPU number)")
    torch = require("torch", "dense", "Neural models")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(f"device '{device}' was asked for, but torch sees no CUDA GPU on this machine "
                          f"(torch {torch.__version__}, {build}); use device=cpu, or device=auto to use a GPU "
                          f"only when there is one")
    number = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if number >= count:
        raise DeviceError(f"device '{device}' does not exist: torch sees {count} GPU(s), cuda:0 to "
                          f"cuda:{count - 1}; use one of those or device=auto")
    return f"cuda:{number}"


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs: ``device`` (cpu, cuda:N), ``backend`` (torch, onnx) and ``precision``."""

    device: str
    backend: str
    precision: str

    def describe(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}"

    @property
    def label(self) -> str:
        """The precision as recorded with stored vectors and in model configs, which ``choose_runtime`` reads
        back: fp32, bf16 and fp16 run under torch; int8 and every onnx precision name their backend
        (``torch-int8``, ``onnx-int8``, ``onnx-fp32``: they give different vectors)."""
        plain = self.backend == "torch" and self.precision != "int8"
        return self.precision if plain else f"{self.backend}-{self.precision}"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    return precision


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise DeviceError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    return backend


def check_runtime_options(precision: str, device: str | None, backend: str = "auto") -> None:
    """Reject unknown values (and a GPU that is not there) when a pipeline is built, without importing torch
    for the usual ``auto``/``cpu``."""
    chosen = (device or "auto").strip().lower()
    named_backend = precision.partition("-")[0] if "-" in precision else backend
    if chosen == "cpu" or (chosen == "auto" and named_backend == "onnx"):
        choose_runtime(precision, backend, "cpu")  # needs no torch on the CPU
    elif chosen == "auto":
        check_precision(precision.partition("-")[2] if "-" in precision else precision)
        check_backend(named_backend)
    else:
        choose_runtime(precision, backend, device)


def _cuda_half() -> str:
    torch = require("torch", "dense", "Neural models")
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def choose_runtime(precision: str = "auto", backend: str = "auto", device: str | None = "auto") -> Runtime:
    """The runtime for a model from the user's three choices, ``auto`` filled in by the machine (module doc).

    ``precision`` may also be a recorded label (``onnx-int8``: ``Runtime.label``), which fixes the backend."""
    if "-" in precision:
        recorded_backend, _, precision = precision.partition("-")
        check_backend(recorded_backend)
        if backend not in ("auto", recorded_backend):
            raise DeviceError(f"precision '{recorded_backend}-{precision}' is for backend={recorded_backend}, "
                              f"not backend={backend}")
        backend = recorded_backend
    check_precision(precision)
    check_backend(backend)
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        if backend == "onnx":
            raise DeviceError("backend=onnx runs on the CPU only; use backend=torch (or auto) with a GPU")
        if precision == "int8":
            raise DeviceError("precision=int8 is a CPU precision; on a GPU use fp16, bf16, fp32 or auto")
        return Runtime(resolved, "torch", _cuda_half() if precision == "auto" else precision)
    if precision == "fp16":
        raise DeviceError("precision=fp16 is for GPUs; on the CPU use auto, fp32, bf16 or int8")
    if backend == "auto":
        backend = _auto_cpu_backend(precision)
    if precision == "auto":
        precision = "bf16" if backend == "torch" and cpu_has_bf16_units() else \
            "int8" if backend == "onnx" else "fp32"
    if backend == "onnx":
        if precision == "bf16":
            raise DeviceError("backend=onnx runs fp32 or int8; for bf16 use backend=torch")
        if not onnx_available():
            raise DeviceError("backend=onnx needs onnxruntime and onnx: pip install 'rankstack[fast]', "
                              "or use backend=torch")
    return Runtime("cpu", backend, precision)


def _auto_cpu_backend(precision: str) -> str:
    if precision == "bf16" or (precision == "auto" and cpu_class() in TORCH_AUTO_CPU_CLASSES):
        return "torch"
    return "onnx" if onnx_available() and precision in ("auto", "int8") else "torch"


def training_runtime(precision: str = "auto", device: str | None = "auto") -> Runtime:
    """Training runs under torch: ``auto`` is bf16 on CPUs with bf16 units and on GPUs that have it, fp16 on
    older GPUs, fp32 elsewhere; int8 (an inference format) and onnx precisions train in fp32 or their float
    type. The Trainer uses the first visible GPU, so a device other than cuda:0 is chosen with
    ``CUDA_VISIBLE_DEVICES``."""
    plain = precision.partition("-")[2] if "-" in precision else precision
    runtime = choose_runtime("fp32" if plain == "int8" else plain, "torch", device)
    if runtime.device.startswith("cuda:") and runtime.device != "cuda:0":
        raise DeviceError(f"training runs on the first visible GPU; for {runtime.device} run with "
                          f"CUDA_VISIBLE_DEVICES={runtime.device.partition(':')[2]} and device=cuda")
    return runtime
