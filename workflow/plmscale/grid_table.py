"""What each scaling point of a study will train on, before anything trains (``plmscale grid``).

Per point (:meth:`plmscale.config.Study.points`: IsoFLOP, support, transfer and repetition runs):

- ``N``: non-embedding parameters (:func:`plmscale.flops.n_params_non_embedding`), ``D = C / (6 N)``;
- steps ``ceil(D / tokens_per_step)`` and ``D_trained = steps x tokens_per_step``, the tokens the run
  actually consumes (:class:`plmscale.settings.TrainSettings`);
- epochs per source ``D_trained x p_s / T_s``: ``p_s`` the source's ``proportion`` (or, without
  proportions, its share of the tokens: the sources are concatenated), ``T_s`` its training tokens (for a
  repetition run, at most ``p_s x unique_tokens``; a run on one source alone has ``p = 1``);
- time on one device ``(6 N + 12 L d T) x D_trained / (peak x MFU)`` (PaLM App. B FLOPs, the same
  estimate :func:`plmscale.settings.job_resources` sizes jobs with).

``T_s`` comes from the token manifests (``results/tokens/train/<source>/shard*/manifest.json``) when the
data stage has run, else it is estimated from the size of the source's FASTA (the train split, else the
validated file, else the source file, times ``split.fractions.train``; header bytes are counted too, so
the estimate is high and the epochs low), else it is unknown.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plmscale.flops import flops_per_token_with_attention

DEVICE_ENTRIES = {  # --device name -> plmscale.peaks.PEAK_FLOPS accelerator
    "a100": "NVIDIA A100",
    "h100": "NVIDIA H100 SXM",
    "h200": "NVIDIA H200",
    "gaudi2": "Intel Gaudi 2",
    "gaudi3": "Intel Gaudi 3",
}
DEVICES = ("cpu", *DEVICE_ENTRIES)
GZIP_COUNT_LIMIT_BYTES = 64 << 20  # gzipped FASTA files up to this size are decompressed to be measured


@dataclass(frozen=True)
class Throughput:
    """The device an estimate assumes: ``peak_flops`` FLOP/s at ``mfu`` utilisation, and where the peak
    came from."""

    name: str
    peak_flops: float
    mfu: float
    source: str

    def seconds(self, flops: float) -> float:
        return flops / (self.peak_flops * self.mfu)


def device_throughput(device: str, precision: str, mfu: float, peak_flops: float | None = None) -> Throughput:
    """The peak of ``device`` for ``precision`` (plmscale.peaks' table; a CPU is measured with a short
    matmul), unless ``peak_flops`` is given; ``ValueError`` for an unknown device or a missing entry."""
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU {mfu} must be in (0, 1]")
    if peak_flops is not None:
        return Throughput(device, float(peak_flops), mfu, "given (--peak-flops)")
    from plmscale import peaks

    if device == "cpu":
        peak = peaks.measure_cpu_peak(precision)
        return Throughput(device, peak, mfu, f"measured: best {precision} matmul on this CPU")
    if device not in DEVICE_ENTRIES:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICES}")
    peak, source = peaks.lookup_peak(DEVICE_ENTRIES[device], precision)
    if peak is None:
        raise ValueError(f"{device}: {source}; pass --precision bf16 or --peak-flops")
    return Throughput(device, peak, mfu, source)


@dataclass(frozen=True)
class SourceTokens:
    """Training tokens of one source (None when unknown) and how they were obtained."""

    tokens: float | None
    how: str


def _manifest_tokens(source_dir: Path) -> float | None:
    manifests = sorted(source_dir.glob("shard*/manifest.json"))
    if not manifests:
        return None
    data = [json.loads(m.read_text()) for m in manifests]
    if len(data) != data[0].get("num_shards", len(data)):
        return None  # a partial data stage: fall back to an estimate
    return float(sum(d["num_tokens"] for d in data))


def _fasta_bytes(path: Path) -> int | None:
    """Uncompressed size of a (possibly gzipped) FASTA; None for a large gzipped file."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if not gzipped:
        return path.stat().st_size
    if path.stat().st_size > GZIP_COUNT_LIMIT_BYTES:
        return None
    total = 0
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            total += len(chunk)
    return total


def source_file(config: Mapping[str, Any], name: str, workdir: Path) -> Path:
    """The FASTA a source's validation reads (as ``rules/common.smk:source_fasta`` names it)."""
    spec = config["sources"][name]
    if spec["kind"] == "fasta":
        from plmscale.sources import local_path

        path = local_path(spec)
        return path if path.is_absolute() else workdir / path
    folder = spec["kind"] if spec["kind"] in ("embedded", "mmseqs_db", "subtract") else "download"
    return workdir / f"resources/{folder}/{name}.fasta"


def available_tokens(config: Mapping[str, Any], workdir: str | Path = ".") -> dict[str, SourceTokens]:
    """Training tokens per source: exact from the token manifests, else estimated (module docstring)."""
    workdir = Path(workdir)
    fraction = float(config["split"]["fractions"]["train"])
    out = {}
    for name in sorted(config["sources"]):
        exact = _manifest_tokens(workdir / f"results/tokens/train/{name}")
        if exact is not None:
            out[name] = SourceTokens(exact, "token manifests")
            continue
        candidates = [
            (workdir / f"results/split/train/{name}.fasta", 1.0),
            (workdir / f"results/validate/{name}.fasta", fraction),
            (source_file(config, name, workdir), fraction),
        ]
        found = SourceTokens(None, "unknown (no token manifests and no FASTA yet)")
        for path, share in candidates:
            size = _fasta_bytes(path) if path.is_file() else None
            if size is not None:
                part = f"{share:g} x " if share != 1 else ""
                how = f"estimated: {part}{size:,} bytes (uncompressed) of {path}"
                found = SourceTokens(size * share, how)
                break
        out[name] = found
    return out


@dataclass(frozen=True)
class GridRow:
    """One scaling point's plan (module docstring); ``epochs`` per source it trains on (None = unknown)."""

    run_id: str
    kind: str
    n_params: int
    num_tokens: float  # D = C / (6 N)
    num_steps: int
    tokens_per_step: int
    trained_tokens: int  # steps x tokens per step
    flops: float  # (6 N + 12 L d T) x trained tokens
    epochs: dict[str, float | None]
    designed_epochs: float | None  # a repetition run's own epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _proportions(config: Mapping[str, Any], available: Mapping[str, SourceTokens]) -> dict[str, float] | None:
    sources = config["sources"]
    if all("proportion" in spec for spec in sources.values()):
        return {name: float(spec["proportion"]) for name, spec in sources.items()}
    tokens = {name: available[name].tokens for name in sources}
    if any(t is None for t in tokens.values()) or not sum(tokens.values()):  # type: ignore[arg-type]
        return None
    total = sum(tokens.values())  # type: ignore[arg-type]
    return {name: t / total for name, t in tokens.items()}  # type: ignore[operator]


def grid_rows(config: Mapping[str, Any], study: Any, available: Mapping[str, SourceTokens]) -> list[GridRow]:
    """The plan of every point of ``study`` (a :class:`plmscale.config.Study` of ``config``)."""
    mix = _proportions(config, available)
    rows = []
    for point in study.points():
        per_step = study.tokens_per_step(point.shape_name)
        trained = point.num_steps * per_step
        shares = {point.source: 1.0} if point.source is not None else mix
        names = [point.source] if point.source is not None else sorted(config["sources"])
        epochs: dict[str, float | None] = {}
        for name in names:
            tokens = available[name].tokens
            if shares is None or tokens is None:
                epochs[name] = None
                continue
            if point.unique_tokens is not None:
                tokens = min(tokens, shares[name] * point.unique_tokens)
            epochs[name] = trained * shares[name] / tokens if tokens > 0 else math.inf
        rows.append(
            GridRow(
                run_id=point.run_id,
                kind=point.kind,
                n_params=point.n_params,
                num_tokens=point.num_tokens,
                num_steps=point.num_steps,
                tokens_per_step=per_step,
                trained_tokens=trained,
                flops=flops_per_token_with_attention(point.shape, point.n_params, study.context) * trained,
                epochs=epochs,
                designed_epochs=point.epochs,
            )
        )
    return rows


def repeat_warnings(rows: Sequence[GridRow], config: Mapping[str, Any]) -> list[str]:
    """One line per source that some run sees more than once (a repetition run: more than its own
    epochs), and per source whose ``max_epochs`` a run would exceed."""
    lines = []
    for name in sorted(config["sources"]):
        over = [
            (r.epochs[name], r.run_id)
            for r in rows
            if r.epochs.get(name) is not None and r.epochs[name] > max(1.0, 1.001 * (r.designed_epochs or 0))
        ]
        if over:
            most, run = max(over)
            lines.append(
                f"warning: data repeats: {len(over)} of {len(rows)} runs see source {name!r} more than once "
                f"(up to {most:.3g} epochs, run {run}); more data or smaller budgets avoid it"
            )
        limit = config["sources"][name].get("max_epochs")
        beyond = [r.run_id for r in rows if limit is not None and (r.epochs.get(name) or 0) > limit]
        if beyond:
            lines.append(
                f"warning: {len(beyond)} runs exceed sources.{name}.max_epochs = {limit:g} "
                f"(e.g. {beyond[0]}); train.on_over_repeat = {config['train']['on_over_repeat']!r} decides"
            )
    return lines


def duration(seconds: float) -> str:
    """A compact duration: ``45 s``, ``12.5 min``, ``3.2 h``, ``4.1 d``."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2g} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _epochs_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def format_grid(
    rows: Sequence[GridRow],
    config: Mapping[str, Any],
    available: Mapping[str, SourceTokens],
    throughputs: Sequence[Throughput],
) -> str:
    """The table ``plmscale grid`` prints: a header (sources, devices), one line per point, the totals and
    the repeat warnings."""
    sources = sorted(config["sources"])
    lines = [f"{len(rows)} runs, context {config['train']['context']} tokens"]
    for name in sources:
        tokens = available[name].tokens
        amount = "?" if tokens is None else f"{tokens:,.0f}"
        lines.append(f"source {name}: {amount} training tokens ({available[name].how})")
    for t in throughputs:
        lines.append(
            f"time on one {t.name}: (6N + 12 L d T) x D_trained / (peak x MFU), "
            f"peak {t.peak_flops / 1e12:.4g} TFLOP/s ({t.source}), MFU {t.mfu:g}"
        )
    header = ["run", "kind", "N", "D", "steps", "tokens/step"]
    header += [f"epochs {name}" for name in sources] + [f"time {t.name}" for t in throughputs]
    table = [header]
    for r in rows:
        cells = [r.run_id, r.kind, f"{r.n_params:,}", f"{r.num_tokens:,.0f}", f"{r.num_steps:,}"]
        cells.append(f"{r.tokens_per_step:,}")
        cells += [_epochs_text(r.epochs[name]) if name in r.epochs else "-" for name in sources]
        cells += [duration(t.seconds(r.flops)) for t in throughputs]
        table.append(cells)
    total_flops = sum(r.flops for r in rows)
    table.append(["total", "", "", f"{sum(r.trained_tokens for r in rows):,}", "", ""])
    table[-1] += [""] * len(sources) + [duration(t.seconds(total_flops)) for t in throughputs]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        cells = enumerate(zip(row, widths, strict=True))
        text = "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in cells)
        lines.append(text.rstrip())
        if k == 0 or k == len(table) - 2:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"total {total_flops:.3g} FLOPs with attention; the total D row counts D_trained")
    return "\n".join(lines + repeat_warnings(rows, config))
