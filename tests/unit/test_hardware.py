"""Choosing device, backend and precision: the CPU class decides ``auto``; wrong choices fail clearly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rankstack.models import hardware
from rankstack.models.hardware import DeviceError, Runtime, check_runtime_options, choose_runtime, classify_cpu


@pytest.mark.parametrize(("flags", "expected"), [
    ({"fma", "avx2"}, "avx2"),
    ({"avx2", "avx512f", "avx512_vnni"}, "avx512-vnni"),
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "avx512-bf16"),
    ({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, "amx-bf16"),
    ({"sse4_2"}, "baseline"),
])
def test_cpu_classes_from_flags(flags: set[str], expected: str) -> None:
    assert classify_cpu(flags) == expected


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a CPU of a given class, with or without onnxruntime, and no GPU."""
    def set_machine(cpu: str, onnx: bool = True) -> None:
        monkeypatch.setattr(hardware, "cpu_class", lambda: cpu)
        monkeypatch.setattr(hardware, "onnx_available", lambda: onnx)
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False, device_count=lambda: 0),
                                 version=SimpleNamespace(cuda=None), __version__="2.x+cpu")
    monkeypatch.setattr(hardware, "require", lambda *_: fake_torch)
    return set_machine


@pytest.mark.parametrize(("cpu", "onnx", "expected"), [
    ("amx-bf16", True, Runtime("cpu", "torch", "bf16")),
    ("avx512-bf16", True, Runtime("cpu", "onnx", "int8")),  # no AMX: VNNI's int8 measured faster than bf16
    ("avx512-bf16", False, Runtime("cpu", "torch", "bf16")),
    ("avx512-vnni", True, Runtime("cpu", "onnx", "int8")),
    ("avx2", True, Runtime("cpu", "onnx", "int8")),
    ("avx2", False, Runtime("cpu", "torch", "fp32")),
])
def test_auto_follows_the_cpu_class(machine, cpu: str, onnx: bool, expected: Runtime) -> None:
    machine(cpu, onnx)
    assert choose_runtime() == expected


def test_explicit_choices_are_kept(machine) -> None:
    machine("avx2")
    assert choose_runtime("fp32") == Runtime("cpu", "torch", "fp32")  # the reference stays torch
    assert choose_runtime("int8", "torch") == Runtime("cpu", "torch", "int8")
    assert choose_runtime("fp32", "onnx") == Runtime("cpu", "onnx", "fp32")
    assert choose_runtime("bf16") == Runtime("cpu", "torch", "bf16")


@pytest.mark.parametrize("runtime", [Runtime("cpu", "onnx", "int8"), Runtime("cpu", "torch", "int8"),
                                     Runtime("cpu", "onnx", "fp32"), Runtime("cpu", "torch", "bf16")])
def test_a_recorded_label_gives_back_its_runtime(machine, runtime: Runtime) -> None:
    machine("amx-bf16")  # a machine whose auto differs: the label alone must decide
    assert choose_runtime(runtime.label) == runtime


@pytest.mark.parametrize(("call", "words"), [
    (lambda: choose_runtime("int4"), ["precision", "int4", "fp32"]),
    (lambda: choose_runtime("auto", "tensorrt"), ["backend", "tensorrt", "onnx"]),
    (lambda: choose_runtime("fp16", device="cpu"), ["fp16", "GPU"]),
    (lambda: choose_runtime("bf16", "onnx"), ["bf16", "backend=torch"]),
    (lambda: choose_runtime("onnx-int8", "torch"), ["onnx-int8", "backend=torch"]),
    (lambda: choose_runtime(device="cuda"), ["cuda", "no CUDA GPU", "device=cpu", "device=auto"]),
    (lambda: choose_runtime(device="cuda:1"), ["cuda:1", "device=cpu"]),
    (lambda: choose_runtime(device="gpu0"), ["gpu0", "cuda:N"]),
    (lambda: check_runtime_options("onnx-bf16", "auto"), ["bf16", "backend=torch"]),
])
def test_bad_choices_name_the_option_and_the_fix(machine, call, words: list[str]) -> None:
    machine("avx2")
    with pytest.raises(DeviceError) as raised:
        call()
    for word in words:
        assert word in str(raised.value)


def test_onnx_without_onnxruntime_says_what_to_install(machine) -> None:
    machine("avx2", onnx=False)
    with pytest.raises(DeviceError, match=r"rankstack\[fast\]"):
        choose_runtime("int8", "onnx")


def test_gpu_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(count: int, bf16: bool) -> None:
        torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: count > 0, device_count=lambda: count,
                                                     is_bf16_supported=lambda: bf16),
                                version=SimpleNamespace(cuda="12.8"), __version__="2.x")
        monkeypatch.setattr(hardware, "require", lambda *_: torch)

    fake(2, bf16=True)
    assert choose_runtime() == Runtime("cuda", "torch", "bf16")
    assert choose_runtime(device="cuda:1") == Runtime("cuda:1", "torch", "bf16")
    assert choose_runtime("fp32", device="cuda") == Runtime("cuda:0", "torch", "fp32")
    with pytest.raises(DeviceError, match="2 GPU"):
        choose_runtime(device="cuda:2")
    with pytest.raises(DeviceError, match="CPU"):
        choose_runtime("int8", device="cuda")
    with pytest.raises(DeviceError, match="CPU only"):
        choose_runtime(backend="onnx", device="cuda")
    assert choose_runtime(device="cpu").device == "cpu"  # a GPU is used only when asked or auto
    fake(1, bf16=False)
    assert choose_runtime() == Runtime("cuda", "torch", "fp16")  # older GPUs: fp16


def test_in_parallel_keeps_the_order_and_runs_whole_batches_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="the dense extra is not installed")
    import threading

    from rankstack.models import onnx_backend

    monkeypatch.setattr(onnx_backend, "cpu_workers", lambda: 3)
    seen: list[tuple[str, list[int]]] = []

    def call(group: list[int]) -> list[int]:
        assert onnx_backend._PARALLEL.active  # the throughput session is used in the worker threads
        seen.append((threading.current_thread().name, group))
        return [item * 10 for item in group]

    items = list(range(50))
    sizes = [(i * 37) % 11 for i in items]  # lengths in no order
    assert onnx_backend.in_parallel(call, items, sizes, batch_size=8) == [i * 10 for i in items]
    assert len(seen) == 3 and sorted(i for _, group in seen for i in group) == items
    for _, group in seen:  # each thread's share is length-sorted, so its batches pad little
        assert [sizes[i] for i in group] == sorted((sizes[i] for i in group), reverse=True)
    assert onnx_backend.in_parallel(lambda group: [g + 1 for g in group], [1, 2], [1, 1], 8) == [2, 3]  # small: inline
