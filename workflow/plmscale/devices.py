"""Where a job runs: device choice, precision, distributed backend (peak FLOP/s: :mod:`plmscale.peaks`;
memory: :mod:`plmscale.memory`).

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
import os
import socket
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


# ---------------------------------------------------------------------------------------------------
# What is there


def hpu_module() -> tuple[ModuleType | None, str]:
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
    hthpu, note = hpu_module()
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
        hthpu, note = hpu_module()
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


def check_precision_name(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision={precision!r} is not one of {PRECISIONS}")


def check_precision(device: torch.device, precision: str) -> None:
    """Raise :class:`PrecisionUnsupported` where the device cannot run ``precision``.

    bf16 needs compute capability 8.0 (Ampere) on CUDA: ``torch.cuda.is_bf16_supported`` without
    emulation.  Every Gaudi supports bf16 (Intel mixed-precision guide); the CPU runs bf16 autocast
    everywhere (fast only with AVX512_BF16 / AMX, see notes/perf.md §4).
    """
    check_precision_name(precision)
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
    check_precision_name(precision)
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
    check_precision_name(precision)
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
        hthpu, note = hpu_module()
        if hthpu is None:
            raise DeviceUnavailable(f"hpu device named but {note}")
        hthpu.synchronize()


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
