"""Where a job runs: device choice, precision, distributed backend, peak FLOP/s, memory.

One place answers, for CPU, NVIDIA CUDA GPUs and Intel Gaudi (HPU), the questions a training or
evaluation job asks of its hardware.  Hardware honesty: a device that was asked for and is absent is an
error (:class:`DeviceUnavailable`) naming the host, what was found and the fix; only ``auto`` may pick
the CPU, and it says so and why.  Nothing here falls back to the CPU silently.

The CUDA and Gaudi code paths follow the vendors' documented APIs; they cannot run on a machine without
that hardware, so the tests here exercise only their failure paths and the pure functions.

Intel Gaudi PyTorch API used here (Intel Gaudi documentation, v1.23):

- ``torch.device("hpu")`` and ``import habana_frameworks.torch.core as htcore``; in lazy mode
  ``htcore.mark_step()`` "must be added in all training scripts right after loss.backward() and
  optimizer.step()": https://docs.habana.ai/en/latest/PyTorch/PyTorch_Model_Porting/Mixed_Precision.html
  (page "Importing PyTorch Models Manually") and https://docs.habana.ai/en/latest/PyTorch/Reference/mark_step.html
- execution modes: eager (+ ``torch.compile(backend="hpu_backend")``) is the default, lazy is a legacy
  fallback selected with ``PT_HPU_LAZY_MODE=1`` (``=0``: eager):
  https://docs.habana.ai/en/latest/PyTorch/PyTorch_Gaudi_Theory_of_Operations.html and
  https://docs.habana.ai/en/latest/PyTorch/Reference/PyTorch_Support_Matrix.html
- bf16 autocast: ``torch.autocast(device_type="hpu", dtype=torch.bfloat16)`` around forward and loss:
  https://docs.habana.ai/en/latest/PyTorch/PyTorch_Mixed_Precision/index.html
- distributed: ``import habana_frameworks.torch.distributed.hccl`` then
  ``init_process_group(backend="hccl")``; the bridge maps processes to devices from ``LOCAL_RANK`` /
  ``OMPI_COMM_WORLD_LOCAL_RANK`` (else the first free device); custom launchers call
  ``initialize_distributed_hpu(world_size, rank, local_rank)``:
  https://docs.habana.ai/en/latest/PyTorch/PyTorch_Scaling_Guide/Distributed_Backend_Initialization.html and
  https://docs.habana.ai/en/latest/PyTorch/PyTorch_Scaling_Guide/Gaudi_Assignment.html
- ``habana_frameworks.torch.hpu`` (package layout: https://docs.habana.ai/en/latest/PyTorch/Python_Packages.html):
  ``is_available``, ``device_count``, ``get_device_name`` ("GAUDI2", "GAUDI3"), ``synchronize``,
  ``max_memory_allocated``, ``reset_peak_memory_stats``, ``memory_stats()["Limit"]`` (device memory) --
  the calls DeepSpeed's HPU accelerator makes (deepspeedai/DeepSpeed, accelerator/hpu_accelerator.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "hpu")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
PARALLEL: tuple[str, ...] = ("none", "ddp", "fsdp")
_ENV_SHOWN = (
    "CUDA_VISIBLE_DEVICES",
    "HABANA_VISIBLE_MODULES",
    "HABANA_VISIBLE_DEVICES",
    "SLURM_JOB_PARTITION",
)


class DeviceUnavailable(RuntimeError):
    """The device asked for is not usable in this process (never answered by a CPU fallback)."""


class PrecisionUnsupported(RuntimeError):
    """The precision asked for is not supported by the device."""


class MemoryEstimateTooLarge(RuntimeError):
    """The estimated peak memory of a training step exceeds the device's memory."""


# ---------------------------------------------------------------------------------------------------
# What is there


def _hpu_module() -> tuple[ModuleType | None, str]:
    """``habana_frameworks.torch.hpu`` (or ``torch.hpu`` when the Gaudi stack autoloads) and a note."""
    try:
        import habana_frameworks.torch.hpu as hthpu  # type: ignore[import-not-found]

        return hthpu, "habana_frameworks importable"
    except ImportError as err:
        autoloaded = getattr(torch, "hpu", None)
        if autoloaded is not None and hasattr(autoloaded, "is_available"):
            return autoloaded, "torch.hpu present (autoloaded)"
        return None, f"habana_frameworks not importable ({err})"
    except Exception as err:  # the package is there but its libraries fail to load
        return None, f"habana_frameworks failed to import ({type(err).__name__}: {err})"


def probe_devices() -> dict[str, Any]:
    """What this process can see: CUDA and Gaudi availability, device counts, the relevant env vars."""
    facts: dict[str, Any] = {
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
        "cuda_count": int(torch.cuda.device_count()) if torch.cuda.is_available() else 0,
    }
    hthpu, note = _hpu_module()
    facts["hpu_import"] = note
    facts["hpu_importable"] = hthpu is not None
    facts["hpu_available"], facts["hpu_count"] = False, 0
    if hthpu is not None:
        try:
            facts["hpu_available"] = bool(hthpu.is_available())
            facts["hpu_count"] = int(hthpu.device_count()) if facts["hpu_available"] else 0
        except Exception as err:
            facts["hpu_import"] += f"; querying devices failed ({type(err).__name__}: {err})"
    facts["env"] = {name: os.environ.get(name) for name in _ENV_SHOWN}
    return facts


def _found(facts: dict[str, Any]) -> str:
    cuda_build = "built without CUDA" if facts["torch_cuda"] is None else f"CUDA {facts['torch_cuda']}"
    env = ", ".join(f"{k}={'<unset>' if v is None else repr(v)}" for k, v in facts["env"].items())
    return (
        f"torch {facts['torch']} ({cuda_build}): torch.cuda.is_available()={facts['cuda_available']}, "
        f"CUDA devices={facts['cuda_count']}; Gaudi: {facts['hpu_import']}, HPU available="
        f"{facts['hpu_available']}, HPUs={facts['hpu_count']}; {env}"
    )


def _unavailable(requested: str, facts: dict[str, Any], problem: str) -> DeviceUnavailable:
    kind = "GPU (CUDA)" if requested == "cuda" else "Gaudi (HPU)"
    return DeviceUnavailable(
        f"train.device={requested!r}: {problem} on host {facts['host']}. Found: {_found(facts)}. "
        f"Fix: run this job on a {kind} partition (a profile whose resources reserve the device, e.g. "
        f"slurm_partition plus gres/gpu or gres/hpu), or set train.device: cpu (or auto) to run on the "
        "CPU on purpose. There is no silent CPU fallback."
    )


def resolve_device(
    requested: str, local_rank: int = 0, *, log: Callable[[str], Any] | None = print
) -> torch.device:
    """The ``torch.device`` this process runs on, made current for ``local_rank``.

    ``auto``: CUDA if available, else Gaudi if its stack imports and reports a device, else the CPU; the
    log line says which and why.  ``cuda`` / ``hpu`` absent: :class:`DeviceUnavailable` naming the host,
    what was found and the fix.  CUDA: ``torch.cuda.set_device(local_rank)``.  HPU: the Gaudi bridge maps
    the process to a device itself from ``LOCAL_RANK`` / ``OMPI_COMM_WORLD_LOCAL_RANK`` (or the first free
    device), so ``torch.device("hpu")`` carries no index (Intel, "Gaudi-to-process Assignment").
    """
    if requested not in DEVICES:
        raise ValueError(f"train.device={requested!r} is not one of {DEVICES}")
    say = log if log is not None else (lambda _msg: None)
    if requested == "cpu":
        device = torch.device("cpu")
        say(f"device: cpu (requested) -> {describe_device(device)}")
        return device
    facts = probe_devices()
    choice, why = requested, "requested"
    if requested == "auto":
        if facts["cuda_available"] and facts["cuda_count"] > 0:
            choice, why = "cuda", f"auto: {facts['cuda_count']} CUDA device(s) visible"
        elif facts["hpu_available"] and facts["hpu_count"] > 0:
            choice, why = "hpu", f"auto: no CUDA; {facts['hpu_count']} Gaudi device(s) visible"
        else:
            device = torch.device("cpu")
            say(
                f"device: auto -> cpu on host {facts['host']}, because no accelerator is usable: "
                f"{_found(facts)} ({describe_device(device)})"
            )
            return device
    if choice == "cuda":
        if not (facts["cuda_available"] and facts["cuda_count"] > 0):
            raise _unavailable("cuda", facts, "no usable CUDA device")
        if not 0 <= local_rank < facts["cuda_count"]:
            raise _unavailable(
                "cuda", facts, f"local rank {local_rank} needs a CUDA device index {local_rank} but only "
                f"{facts['cuda_count']} are visible (one process per GPU: launch at most that many per node)"
            )  # fmt: skip
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        if not (facts["hpu_available"] and facts["hpu_count"] > 0):
            raise _unavailable("hpu", facts, "no usable Gaudi device")
        device = torch.device("hpu")
    where = f"local rank {local_rank}, host {facts['host']}"
    say(f"device: {requested} -> {describe_device(device)} ({why}; {where})")
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The accelerator's product name as its runtime reports it (CPU: the model name)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "hpu":
        hthpu, note = _hpu_module()
        if hthpu is None:
            raise DeviceUnavailable(f"hpu device named but {note}")
        return str(hthpu.get_device_name())
    return _cpu_model()


def describe_device(device: torch.device) -> str:
    """One line for logs, e.g. ``cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)``, ``hpu GAUDI2``,
    ``cpu (2 threads, AMD EPYC)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return (
            f"cuda:{index} {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB)"
        )
    if device.type == "hpu":
        return f"{device} {device_name(device)} ({execution_mode(device)} mode)"
    return f"cpu ({torch.get_num_threads()} threads, {_cpu_model()})"


# ---------------------------------------------------------------------------------------------------
# Precision


def _check_precision_name(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision={precision!r} is not one of {PRECISIONS}")


def check_precision(device: torch.device, precision: str) -> None:
    """Raise :class:`PrecisionUnsupported` where the device cannot run ``precision``.

    bf16 needs compute capability 8.0 (Ampere) on CUDA: ``torch.cuda.is_bf16_supported`` without
    emulation.  Every Gaudi supports bf16 (Intel mixed-precision guide); the CPU runs bf16 autocast
    everywhere (fast only with AVX512_BF16 / AMX, see notes/perf.md §4).
    """
    _check_precision_name(precision)
    if precision != "bf16" or device.type != "cuda":
        return
    try:
        supported = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation argument
        supported = torch.cuda.is_bf16_supported()
    if not supported:
        major, minor = torch.cuda.get_device_capability(device)
        raise PrecisionUnsupported(
            "train.precision='bf16' needs a CUDA GPU of compute capability >= 8.0 (Ampere: A100, H100, "
            f"...); {describe_device(device)} on host {socket.gethostname()} is sm_{major}{minor}. Fix: set "
            "train.precision: fp32, or run on an Ampere-or-newer partition."
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Context for forward and loss: bf16 = ``torch.autocast(device.type, torch.bfloat16)``, fp32 = nothing.

    Autocast runs matmuls in bf16 while the parameters, their gradients and the AdamW state stay fp32
    (master weights); backward runs outside the context (PyTorch AMP docs; Intel's autocast guide wraps
    "the forward pass (model+loss)" the same way).  bf16 needs no loss scaling.
    """
    _check_precision_name(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def configure_backends(device: torch.device, precision: str) -> str:
    """Process-wide math settings; returns a line for the log.

    CUDA: fp32 matmuls and cuDNN convolutions run on TF32 tensor cores (Ampere and later; PyTorch "CUDA
    semantics: TensorFloat-32").  torch >= 2.9 spells this ``torch.backends.cuda.matmul.fp32_precision =
    "tf32"`` (the ``allow_tf32`` flags are to be deprecated); older torch uses ``allow_tf32``.  This is
    why :func:`peak_flops` takes the TF32 peak for fp32 on CUDA.  Other devices: nothing.
    """
    _check_precision_name(precision)
    if device.type != "cuda":
        return f"backends: no changes for {device.type}"
    if hasattr(torch.backends, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"  # type: ignore[attr-defined]
        how = "torch.backends.cuda.matmul.fp32_precision = cudnn.conv.fp32_precision = 'tf32'"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        how = "torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = True"
    return f"backends: fp32 matmuls/convolutions on TF32 tensor cores ({how}); precision={precision}"


# ---------------------------------------------------------------------------------------------------
# Distributed and Gaudi execution


def distributed_backend(
    device: torch.device,
    *,
    world_size: int | None = None,
    rank: int | None = None,
    local_rank: int | None = None,
) -> str:
    """The ``torch.distributed`` backend: ``nccl`` (CUDA), ``hccl`` (Gaudi), ``gloo`` (CPU).

    For Gaudi this imports ``habana_frameworks.torch.distributed.hccl`` (which registers the backend).
    When the launcher is not torchrun/mpirun (``srun``: no ``LOCAL_RANK`` in the environment) and the
    ranks are given, it calls ``initialize_distributed_hpu(world_size, rank, local_rank)`` as Intel
    documents for custom launchers.  Call it before the first tensor is placed on the HPU.
    """
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    if device.type != "hpu":
        raise ValueError(f"no distributed backend known for device type {device.type!r}")
    try:
        import habana_frameworks.torch.distributed.hccl as hccl  # type: ignore[import-not-found]
    except ImportError as err:
        raise DeviceUnavailable(
            f"HPU distributed training needs habana_frameworks.torch.distributed.hccl on host "
            f"{socket.gethostname()}: {err}. Fix: use the Intel Gaudi PyTorch container / wheels on the "
            "Gaudi partition."
        ) from err
    custom_launcher = "LOCAL_RANK" not in os.environ and "OMPI_COMM_WORLD_LOCAL_RANK" not in os.environ
    if custom_launcher and None not in (world_size, rank, local_rank):
        hccl.initialize_distributed_hpu(world_size=world_size, rank=rank, local_rank=local_rank)
    return "hccl"


def execution_mode(device: torch.device) -> str:
    """``lazy`` or ``eager``.  Only Gaudi has a lazy mode: ``PT_HPU_LAZY_MODE=1`` lazy, ``0`` eager; when
    unset, the bridge's own answer (``habana_frameworks.torch.utils.internal.is_lazy``) or, without it,
    eager, the documented default of current Gaudi software."""
    if device.type != "hpu":
        return "eager"
    value = os.environ.get("PT_HPU_LAZY_MODE")
    if value is not None and value.strip() in ("0", "1"):
        return "lazy" if value.strip() == "1" else "eager"
    try:
        from habana_frameworks.torch.utils.internal import is_lazy  # type: ignore[import-not-found]

        return "lazy" if is_lazy() else "eager"
    except ImportError:
        return "eager"


def _no_op() -> None:
    return None


def step_marker(device: torch.device) -> Callable[[], None]:
    """What to call right after ``loss.backward()`` and after ``optimizer.step()``: ``htcore.mark_step``
    on Gaudi in lazy mode (Intel: it "must be added" there), a no-op everywhere else."""
    if device.type != "hpu" or execution_mode(device) != "lazy":
        return _no_op
    try:
        import habana_frameworks.torch.core as htcore  # type: ignore[import-not-found]
    except ImportError as err:
        raise DeviceUnavailable(f"HPU lazy mode needs habana_frameworks.torch.core: {err}") from err
    return htcore.mark_step


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (for timing): CUDA and Gaudi; the CPU is synchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "hpu":
        hthpu, note = _hpu_module()
        if hthpu is None:
            raise DeviceUnavailable(f"hpu device named but {note}")
        hthpu.synchronize()


# ---------------------------------------------------------------------------------------------------
# Peak FLOP/s and MFU

# Dense (no 2:4 sparsity) peak FLOP/s per accelerator and number format.  "tf32" is what fp32 matmuls run
# as on CUDA once configure_backends has enabled TF32.  Sources (see notes/perf.md §6):
# - H100 SXM / H200: bf16 989.4, tf32 494.7 TFLOPS computed from clocks and tensor-core counts,
#   https://glennklockwood.com/garden/processors/h100 ("H200 GPUs are the same as H100 GPUs ... with 144 GB
#   of HBM3e"); fp32 (non-tensor) 67 from NVIDIA's H100 datasheet, whose tensor figures are "with
#   sparsity" (dense = half): https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html
# - H100 PCIe: same datasheet, bf16 1,513 / tf32 756 with sparsity -> 756.5 / 378 dense; fp32 51.
# - A100 (SXM and PCIe, 40/80 GB alike): bf16 312, tf32 156, fp32 19.5 TFLOPS,
#   https://developer.nvidia.com/blog/nvidia-ampere-architecture-in-depth/
# - Intel Gaudi 2: bf16 432 TFLOPS (Intel, Hot Chips 2024 Gaudi 3 talk, Gaudi 2 column; perf.md [16]).
# - Intel Gaudi 3: bf16 1,835 TFLOPS matrix (Intel launch figures, 2024; e.g.
#   https://pcguia.pt/2024/04/nvidia-e-amd-tem-um-novo-rival-no-mercado-de-ia-a-intel and
#   https://evokernel-specs.pages.dev/hardware/gaudi-3/; one report says 1,856, we keep Intel's 1,835).
# Intel publishes no fp32 matrix peak for Gaudi here: fp32 on Gaudi has no entry (MFU then needs an override).
PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("NVIDIA H100 SXM", "bf16"): 989.4e12,
    ("NVIDIA H100 SXM", "tf32"): 494.7e12,
    ("NVIDIA H100 SXM", "fp32"): 67e12,
    ("NVIDIA H200", "bf16"): 989.4e12,
    ("NVIDIA H200", "tf32"): 494.7e12,
    ("NVIDIA H200", "fp32"): 67e12,
    ("NVIDIA H100 PCIe", "bf16"): 756e12,
    ("NVIDIA H100 PCIe", "tf32"): 378e12,
    ("NVIDIA H100 PCIe", "fp32"): 51e12,
    ("NVIDIA A100", "bf16"): 312e12,
    ("NVIDIA A100", "tf32"): 156e12,
    ("NVIDIA A100", "fp32"): 19.5e12,
    ("Intel Gaudi 2", "bf16"): 432e12,
    ("Intel Gaudi 3", "bf16"): 1835e12,
}

# Device-name strings -> table entry, most specific first.  Names are upper-cased and '-'/'_' become spaces:
# "NVIDIA H100 80GB HBM3" (SXM; the PCIe card has HBM2e and reports "NVIDIA H100 PCIe"),
# "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "GAUDI2" / "GAUDI3" (habana get_device_name).
# H100 NVL / H200 NVL / GH200 run at other clocks and power limits: not matched, so no silent wrong peak.
_NAME_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"\bNVL\b"), None),
    (re.compile(r"\bGH200\b"), None),
    (re.compile(r"\bH100\b.*\bPCIE\b"), "NVIDIA H100 PCIe"),
    (re.compile(r"\bH100\b.*\b(SXM\d?|HBM3)\b"), "NVIDIA H100 SXM"),
    (re.compile(r"\bH200\b"), "NVIDIA H200"),
    (re.compile(r"\bA100\b"), "NVIDIA A100"),
    (re.compile(r"\bGAUDI ?2\b|\bHL ?225"), "Intel Gaudi 2"),
    (re.compile(r"\bGAUDI ?3\b|\bHL ?3[23]5"), "Intel Gaudi 3"),
)


def accelerator_entry(name: str) -> str | None:
    """The :data:`PEAK_FLOPS` accelerator a device-name string denotes, or None when unknown/ambiguous."""
    normalized = re.sub(r"[-_]+", " ", name.upper())
    for pattern, entry in _NAME_RULES:
        if pattern.search(normalized):
            return entry
    return None


def lookup_peak(name: str, precision: str, *, tf32: bool = True) -> tuple[float | None, str]:
    """Peak FLOP/s for an accelerator name and training precision, with where it came from.

    ``precision`` fp32 uses the TF32 entry for NVIDIA parts when ``tf32`` (configure_backends enables it).
    """
    _check_precision_name(precision)
    entry = accelerator_entry(name)
    if entry is None:
        return None, f"no peak-FLOP/s entry for device {name!r} (give an override)"
    fmt = "tf32" if precision == "fp32" and tf32 and entry.startswith("NVIDIA") else precision
    peak = PEAK_FLOPS.get((entry, fmt))
    if peak is None:
        return None, f"no {fmt} peak for {entry} in the table (give an override)"
    note = " (fp32 matmuls run as TF32, see configure_backends)" if fmt != precision else ""
    return peak, f"table: {entry} {fmt}{note}"


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def measure_cpu_peak(precision: str = "fp32", seconds: float = 1.0, size: int = 1024) -> float:
    """Best observed FLOP/s of a square ``size`` matmul on this CPU over ``seconds`` (best-of, because
    shared hosts are noisy: notes/perf.md §4 measured 212 GFLOP/s fp32 and 900 bf16 on 2 Zen 5 threads)."""
    _check_precision_name(precision)
    a = torch.randn(size, size).to(_DTYPES[precision])
    b = torch.randn(size, size).to(_DTYPES[precision])
    out = torch.matmul(a, b)  # warm-up (oneDNN picks its kernel)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        elapsed = time.perf_counter() - t0
        if elapsed > 0:
            best = max(best, 2.0 * size**3 / elapsed)
        if time.perf_counter() >= deadline:
            return best


def peak_flops(
    device: torch.device,
    precision: str,
    override: float | None = None,
    *,
    measure_cpu: bool = False,
    tf32: bool = True,
) -> tuple[float | None, str]:
    """The MFU denominator and its source: ``override`` if given (> 0), else the table entry for the
    device's name, else (CPU) a short measured matmul when ``measure_cpu``, else None with the reason."""
    _check_precision_name(precision)
    if override is not None:
        if not override > 0:
            raise ValueError(f"peak FLOP/s override must be positive, got {override}")
        return float(override), "override"
    if device.type == "cpu":
        if measure_cpu:
            peak = measure_cpu_peak(precision)
            return peak, f"measured: best {precision} 1024^3 matmul on {torch.get_num_threads()} threads"
        return None, "cpu: no table peak (measure it or give an override)"
    return lookup_peak(device_name(device), precision, tf32=tf32)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: ``tokens/s * FLOPs/token / peak`` (PaLM App. B); None without a peak.

    FLOPs/token is ``6 N`` or ``6 N + 12 L d T`` (``plmscale.flops``); report which.
    """
    if peak is None:
        return None
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return tokens_per_second * flops_per_token / peak


# ---------------------------------------------------------------------------------------------------
# Memory


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory since the last reset: CUDA/Gaudi ``max_memory_allocated`` (tensors), CPU the process's
    peak resident set (``ru_maxrss``; KiB on Linux, bytes on macOS; cannot be reset)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "hpu":
        hthpu, _ = _hpu_module()
        return None if hthpu is None else int(hthpu.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_memory(device: torch.device) -> None:
    """Restart peak tracking (CUDA and Gaudi; a no-op on the CPU, whose ``ru_maxrss`` cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type == "hpu":
        hthpu, _ = _hpu_module()
        if hthpu is not None:
            hthpu.reset_peak_memory_stats()


def device_memory_bytes(device: torch.device) -> int | None:
    """Memory of the device: CUDA ``total_memory``, Gaudi ``memory_stats()["Limit"]``, CPU physical memory
    (or the cgroup v2 limit of the job, e.g. SLURM's, when smaller)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    if device.type == "hpu":
        hthpu, _ = _hpu_module()
        return None if hthpu is None else int(hthpu.memory_stats()["Limit"])
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            return min(physical, int(limit))
    except OSError:
        pass
    return int(physical)


# Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (arXiv
# 2205.05198), eq. 1: a transformer layer stores s*b*h*(34 + 5*a*s/h) bytes of activations with 16-bit
# values (and 1-byte dropout masks): 34 bytes per token per width ~ 17 stored values.  The 5*a*s^2*b part is
# the attention scores: QK^T (2 B), softmax output (2 B) and the dropout mask (1 B); with no dropout here,
# 2 stored values per score.  With full activation checkpointing only each layer's input (1 value per token
# per width) is kept, plus one layer's full activations recomputed during backward (§4 of the paper).
ACTIVATION_VALUES_PER_TOKEN_WIDTH = 17
SCORE_VALUES_PER_ELEMENT = 2


def estimate_training_memory_bytes(
    n_params_total: int,
    layers: int,
    width: int,
    heads: int,
    micro_batch_rows: int,
    context: int,
    precision: str,
    parallel: str = "none",
    world_size: int = 1,
    activation_checkpointing: bool = False,
    *,
    dense_attention: bool = True,
    vocab_size: int = 33,
) -> dict[str, int]:
    """Estimated peak bytes of one training step on one process (an early check, not a measurement).

    - weights fp32 4 B/param, gradients 4 B, AdamW ``exp_avg`` + ``exp_avg_sq`` 8 B; divided by
      ``world_size`` under FSDP (full sharding), which also holds the gathered fp32 weights of two layers
      (current + prefetched).  DDP (world > 1) keeps gradient buckets the size of all gradients (its default
      ``gradient_as_bucket_view=False``, PyTorch DDP docs).
    - bf16 autocast caches a bf16 copy of the weights (2 B/param, sharded like them under FSDP).
    - activations (per process, ``micro_batch_rows`` rows of ``context`` tokens): ``17 * rows * T * d * L``
      values of 2 B (bf16) or 4 B (fp32) (Korthikanti et al. 2022, eq. 1); with activation checkpointing
      only ``rows * T * d * L`` values plus one layer's full activations.
    - ``dense_attention`` (SDPA with a dense ``(rows, 1, T, T)`` mask): the boolean mask, ``rows * T^2``
      bytes, and attention scores ``2 * rows * heads * T^2`` values per layer (one layer under activation
      checkpointing).  That is what the CPU's math kernel keeps; CUDA's memory-efficient kernel does not
      keep the scores, so there it is an over-estimate.  Block-sparse / varlen kernels (False): neither.
    - the logits over the vocabulary: ``bytes`` + an fp32 copy + its fp32 gradient per element.
    Returns the parts and ``total``.
    """
    _check_precision_name(precision)
    if parallel not in PARALLEL:
        raise ValueError(f"train.parallel={parallel!r} is not one of {PARALLEL}")
    for name, value in (("n_params_total", n_params_total), ("layers", layers), ("width", width),
                        ("heads", heads), ("micro_batch_rows", micro_batch_rows), ("context", context),
                        ("world_size", world_size)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{name}={value} must be positive")
    value_bytes = 2 if precision == "bf16" else 4
    shard = world_size if parallel == "fsdp" else 1
    rows, t, n = micro_batch_rows, context, n_params_total
    parts = {
        "weights": math.ceil(4 * n / shard),
        "gradients": math.ceil(4 * n / shard),
        "optimizer": math.ceil(8 * n / shard),
        "ddp_buckets": 4 * n if parallel == "ddp" and world_size > 1 else 0,
        "fsdp_gathered": math.ceil(2 * 4 * n / layers) if parallel == "fsdp" and world_size > 1 else 0,
        "autocast_cache": math.ceil(2 * n / shard) if precision == "bf16" else 0,
    }
    full_layer = ACTIVATION_VALUES_PER_TOKEN_WIDTH * rows * t * width * value_bytes
    scores_layer = SCORE_VALUES_PER_ELEMENT * rows * heads * t * t * value_bytes if dense_attention else 0
    if activation_checkpointing:
        parts["activations"] = layers * rows * t * width * value_bytes + full_layer
        parts["attention_scores"] = scores_layer
    else:
        parts["activations"] = layers * full_layer
        parts["attention_scores"] = layers * scores_layer
    parts["attention_mask"] = rows * t * t if dense_attention else 0
    parts["logits"] = rows * t * vocab_size * (value_bytes + 8)
    parts["total"] = sum(parts.values())
    return parts


def check_memory_fits(
    estimate: dict[str, int], available: int | None, *, fraction: float = 0.9, where: str = ""
) -> None:
    """Raise :class:`MemoryEstimateTooLarge` when ``estimate["total"]`` exceeds ``fraction`` of
    ``available`` bytes (None: unknown, no check), naming the big parts and the settings that shrink them."""
    if available is None or estimate["total"] <= fraction * available:
        return
    gib = 2**30
    parts = ", ".join(
        f"{k} {v / gib:.2f}" for k, v in sorted(estimate.items(), key=lambda kv: -kv[1]) if k != "total" and v
    )
    raise MemoryEstimateTooLarge(
        f"estimated training memory {estimate['total'] / gib:.2f} GiB per process exceeds "
        f"{fraction:.0%} of the {available / gib:.2f} GiB of {where or 'the device'} (GiB: {parts}). Fix: "
        "lower train.micro_batch_rows (activations, scores and logits scale with it), set "
        "train.activation_checkpointing: true (keeps one value per token and width per layer), or "
        "train.parallel: fsdp (shards weights, gradients and optimizer state over the processes)."
    )


@contextlib.contextmanager
def timed(device: torch.device) -> Iterator[list[float]]:
    """``with timed(device) as t: ...`` then ``t[0]`` = seconds, synchronising the device at both ends."""
    result: list[float] = []
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        synchronize(device)
        result.append(time.perf_counter() - t0)
