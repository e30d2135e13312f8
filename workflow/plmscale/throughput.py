"""Throughput a run can show: tokens/s, achieved FLOP/s and MFU per logging window, peak memory and ETA.

Model FLOPs per token are counted two ways (both in ``metrics.parquet`` and ``done.json``):

* ``6 N`` (Kaplan et al. 2020; the ``C = 6 N D`` of the scaling laws), column ``mfu_6n``;
* ``6 N + 12 L d T`` with attention scores over the context ``T`` (Chowdhery et al. 2022, PaLM App. B),
  column ``mfu``.  With document-masked attention fewer score FLOPs are really computed; PaLM's count (the
  full ``T``, as nanoGPT and torchtitan report it) is kept so MFU compares across kernels.

MFU = achieved FLOP/s / (peak FLOP/s per device x devices).  Only time spent in training steps counts
(forward, backward, optimizer); evaluations and checkpoints are excluded, and the first step of an attempt
(compilation, allocator warm-up) is reported apart as ``warmup_seconds``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from plmscale.flops import ModelShape, flops_per_token_with_attention


@dataclass
class Throughput:
    """Accumulates step times and tokens; :meth:`window` closes a logging window."""

    n_params: int
    shape: ModelShape
    context: int
    tokens_per_step: int
    total_steps: int
    peak_flops_per_device: float | None  # None: MFU is not reported (CPU without a measured or given peak)
    devices: int
    warmup_seconds: float = 0.0
    step_seconds: float = 0.0  # after the warm-up step
    steps_timed: int = 0
    _window_seconds: float = 0.0
    _window_steps: int = 0
    _started: float = field(default_factory=time.perf_counter)

    @property
    def flops_per_token(self) -> float:
        return flops_per_token_with_attention(self.shape, self.n_params, self.context)

    @property
    def flops_per_token_6n(self) -> float:
        return 6.0 * self.n_params

    def add_step(self, seconds: float, *, first_of_attempt: bool) -> None:
        if first_of_attempt:
            self.warmup_seconds += seconds
            return
        self.step_seconds += seconds
        self.steps_timed += 1
        self._window_seconds += seconds
        self._window_steps += 1

    def rates(self, seconds: float, steps: int) -> dict[str, float | None]:
        """tokens/s, FLOP/s and MFU (both conventions) of ``steps`` steps taking ``seconds``."""
        if steps == 0 or seconds <= 0:
            return {"tokens_per_second": None, "flops_per_second": None, "mfu": None, "mfu_6n": None}
        tokens_per_second = steps * self.tokens_per_step / seconds
        achieved = tokens_per_second * self.flops_per_token
        peak = None if self.peak_flops_per_device is None else self.peak_flops_per_device * self.devices
        return {
            "tokens_per_second": tokens_per_second,
            "flops_per_second": achieved,
            "mfu": None if peak is None else achieved / peak,
            "mfu_6n": None if peak is None else tokens_per_second * self.flops_per_token_6n / peak,
        }

    def window(self) -> dict[str, float | None]:
        """Rates since the previous window (falls back to the warm-up step if no other step was timed)."""
        if self._window_steps:
            out = self.rates(self._window_seconds, self._window_steps)
        else:
            out = self.rates(self.warmup_seconds, 1)
        self._window_seconds, self._window_steps = 0.0, 0
        return out

    def overall(self) -> dict[str, float | None]:
        return self.rates(self.step_seconds, self.steps_timed)

    def eta_seconds(self, step_done: int) -> float | None:
        if not self.steps_timed:
            return None
        return (self.total_steps - step_done) * self.step_seconds / self.steps_timed


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{prefix}{unit}"
    return f"{x:.3g}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return str(_dt.timedelta(seconds=round(seconds)))


def format_line(record: dict, total_steps: int, eta_seconds: float | None) -> str:
    """The timestamped throughput line written every ``train.log_every`` steps."""
    mfu = record.get("mfu")
    mfu_text = "n/a" if mfu is None else f"{100 * mfu:.1f}% (6N {100 * record['mfu_6n']:.1f}%)"
    memory = record.get("peak_memory_bytes")
    return (
        f"{_dt.datetime.now().isoformat(timespec='seconds')} step {record['step']}/{total_steps} "
        f"loss {record['train_loss']:.4f} lr {record['lr']:.3g} grad_norm {record['grad_norm']:.3g} "
        f"tokens/s {_si(record.get('tokens_per_second'))} FLOP/s {_si(record.get('flops_per_second'))} "
        f"MFU {mfu_text} peak_mem {_si(memory, 'B')} ETA {_duration(eta_seconds)}"
    )


def measured_mfu(runs_dir: str | Path) -> tuple[float, float, str] | None:
    """The MFU and peak FLOP/s per device of the largest finished run under ``runs_dir`` that trained on an
    accelerator and has both, with a description of where they come from; None if no run has them.

    Runs on the CPU are skipped: their MFU says nothing about the GPU or Gaudi a plan is for."""
    best: tuple[int, float, float, str] | None = None
    for done_path in sorted(Path(runs_dir).glob("*/*/*/done.json")):
        done = json.loads(done_path.read_text())
        mfu, peak, device = done.get("mfu"), done.get("peak_flops_per_device"), str(done.get("device", "cpu"))
        if mfu is None or peak is None or device.startswith("cpu"):
            continue
        n = int(done["n_params_non_embedding"])
        if best is None or n > best[0]:
            best = (n, float(mfu), float(peak), f"measured by run {done_path.parent} (N={n:,}) on {device}")
    return None if best is None else best[1:]
