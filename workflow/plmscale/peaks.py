"""Peak FLOP/s of the accelerators plmscale runs on, and model-FLOP utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s (Chowdhery et al. 2022, PaLM App. B).  The peaks are dense (no
2:4 sparsity) vendor figures per number format; on a CPU the peak is measured with a short matmul.
"""

from __future__ import annotations

import re
import time

import torch

from plmscale.devices import check_precision_name, device_name

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
    check_precision_name(precision)
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
    check_precision_name(precision)
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
    check_precision_name(precision)
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
