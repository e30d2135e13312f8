"""Figures and tables of the hardware benchmark (matplotlib, headless).

* ``hwbench_figures``: inference wall time, speedup against a reference device and fine-tuning scaling,
  in the style of the Intel / Hugging Face ProtST-on-Gaudi-2 blog.
* ``hwbench_table_markdown``: the benchmark tables as Markdown.

Pure helpers (``read_*``, ``speedups``, ``scaling``) compute every number a figure encodes; the ``*_fig``
functions turn frames into figures; ``hwbench_figures`` and ``hwbench_table_markdown`` do the I/O.
Every figure is written as PNG and SVG.  The downstream-vs-compute figure is in
:mod:`plmscale.downstream_plots`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from plmscale.downstream_plots import _ordered, _read_table
from plmscale.figure_style import FigureFacts, attach_facts, plain_log_ticks
from plmscale.plots import save_figure, style_axes

DEVICE_COLORS = {"cpu": "tab:gray", "cuda": "tab:green", "hpu": "tab:blue"}
PADDING_COLORS = {"max_length": "tab:purple", "none": "tab:cyan"}
PADDING_ORDER = ("max_length", "none")
DEVICE_ORDER = ("cpu", "cuda", "hpu")

INFERENCE_SCHEMA: dict[str, type[pl.DataType]] = {
    "device": pl.String,
    "device_name": pl.String,
    "padding": pl.String,
    "max_length": pl.Int64,
    "n_sequences": pl.Int64,
    "warmup_s": pl.Float64,
    "wall_s": pl.Float64,
    "seq_per_s": pl.Float64,
    "tokens_per_s": pl.Float64,
    "padded_tokens_per_s": pl.Float64,
}
FINETUNE_SCHEMA: dict[str, type[pl.DataType]] = {
    "device": pl.String,
    "device_name": pl.String,
    "n_devices": pl.Int64,
    "method": pl.String,
    "epochs_timed": pl.Int64,
    "wall_s_per_epoch": pl.Float64,
    "samples_per_s": pl.Float64,
    "speedup_vs_one": pl.Float64,
    "scaling_efficiency": pl.Float64,
}


# --------------------------------------------------------------------------------------------- reading
def read_inference(path: str | Path) -> pl.DataFrame:
    """``results/hwbench/inference.csv``."""
    return _read_table(path, INFERENCE_SCHEMA)


def read_finetune(path: str | Path) -> pl.DataFrame:
    """``results/hwbench/finetune.csv``."""
    return _read_table(path, FINETUNE_SCHEMA)


# --------------------------------------------------------------------------------------- hwbench maths
def device_labels(*frames: pl.DataFrame) -> dict[str, str]:
    """device -> "cuda (NVIDIA H200)" (the first device_name seen)."""
    labels: dict[str, str] = {}
    for frame in frames:
        for r in frame.select("device", "device_name").iter_rows(named=True):
            if r["device"] not in labels:
                name = r["device_name"]
                labels[r["device"]] = (
                    f"{r['device']} ({name})" if name and name != r["device"] else r["device"]
                )
    return labels


def resolve_reference(inference: pl.DataFrame, finetune: pl.DataFrame, reference: str | None = None) -> str:
    """The device speedups are measured against: ``reference`` if given (it must be in a table), else
    "cuda" if present, else "cpu", else the first device of the inference table."""
    devices = set(inference["device"].to_list()) | set(finetune["device"].to_list())
    if reference is not None:
        if reference not in devices:
            raise ValueError(f"reference device {reference!r} not in the benchmark tables {sorted(devices)}")
        return reference
    for candidate in ("cuda", "cpu"):
        if candidate in devices:
            return candidate
    return _ordered(inference["device"].to_list() + finetune["device"].to_list(), DEVICE_ORDER)[0]


def speedups(inference: pl.DataFrame, finetune: pl.DataFrame, reference: str) -> pl.DataFrame:
    """Speedup of every device against ``reference``, one row per (workload, setting, device).

    * inference, per padding policy: ratio of throughputs n_sequences / wall_s (equal to
      wall_s[reference] / wall_s[device] when both ran the same sequences);
    * fine-tuning on one device, per method: wall_s_per_epoch[reference] / wall_s_per_epoch[device].

    A workload the reference device did not run is left out. Columns: workload, setting, device,
    device_name, reference, value (rate: seq/s or epochs/s), reference_value, speedup.
    """
    inf = inference.select(
        pl.lit("inference").alias("workload"),
        ("padding=" + pl.col("padding")).alias("setting"),
        "device",
        "device_name",
        (pl.col("n_sequences") / pl.col("wall_s")).alias("value"),
    )
    one = finetune.filter(pl.col("n_devices") == 1).select(
        pl.lit("fine-tuning, 1 device").alias("workload"),
        ("method=" + pl.col("method").fill_null("?")).alias("setting"),
        "device",
        "device_name",
        (1.0 / pl.col("wall_s_per_epoch")).alias("value"),
    )
    rates = pl.concat([inf, one]).unique(["workload", "setting", "device"], keep="first", maintain_order=True)
    ref = rates.filter(pl.col("device") == reference).select(
        "workload", "setting", pl.col("value").alias("reference_value")
    )
    out = rates.join(ref, on=["workload", "setting"], how="inner", maintain_order="left").with_columns(
        pl.lit(reference).alias("reference"),
        (pl.col("value") / pl.col("reference_value")).alias("speedup"),
    )
    device_rank = {d: i for i, d in enumerate(DEVICE_ORDER)}
    return (
        out.with_columns(
            pl.col("device").replace_strict(device_rank, default=len(device_rank)).alias("_rank"),
            (pl.col("workload") != "inference").alias("_ft"),
        )
        .sort("_ft", "setting", "_rank", "device")
        .select(
            "workload", "setting", "device", "device_name", "reference", "value", "reference_value", "speedup"
        )
    )


def scaling(finetune: pl.DataFrame) -> pl.DataFrame:
    """Fine-tuning throughput vs number of devices, per (device, method), recomputed from samples_per_s:
    speedup_vs_one = samples_per_s / samples_per_s(1 device), ideal_samples_per_s = n_devices *
    samples_per_s(1 device), scaling_efficiency = samples_per_s / ideal. Without a 1-device row the
    table's own speedup_vs_one / scaling_efficiency are kept and ideal_samples_per_s is null."""
    base = (
        finetune.filter(pl.col("n_devices") == 1)
        .group_by("device", "method")
        .agg(pl.col("samples_per_s").first().alias("one_device_samples_per_s"))
    )
    frame = finetune.join(base, on=["device", "method"], how="left", nulls_equal=True)
    ideal = pl.col("n_devices") * pl.col("one_device_samples_per_s")
    has_base = pl.col("one_device_samples_per_s").is_not_null()
    return (
        frame.with_columns(
            ideal.alias("ideal_samples_per_s"),
            pl.when(has_base)
            .then(pl.col("samples_per_s") / pl.col("one_device_samples_per_s"))
            .otherwise(pl.col("speedup_vs_one"))
            .alias("speedup_vs_one"),
            pl.when(has_base)
            .then(pl.col("samples_per_s") / ideal)
            .otherwise(pl.col("scaling_efficiency"))
            .alias("scaling_efficiency"),
        )
        .select(
            "device",
            "device_name",
            "method",
            "n_devices",
            "samples_per_s",
            "one_device_samples_per_s",
            "ideal_samples_per_s",
            "speedup_vs_one",
            "scaling_efficiency",
        )
        .sort("device", "method", "n_devices")
    )


# ------------------------------------------------------------------------------------- hwbench figures
def inference_time_fig(inference: pl.DataFrame):
    """Grouped bars: inference wall time (s) per device, one bar per padding policy, annotated with the
    seconds and the throughput (seq/s)."""
    devices = _ordered(inference["device"].to_list(), DEVICE_ORDER)
    paddings = _ordered(inference["padding"].to_list(), PADDING_ORDER)
    labels = device_labels(inference)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(devices) + 1.5), 4.2))
    width = 0.8 / len(paddings)
    seen: set[str] = set()
    for k, padding in enumerate(paddings):
        for i, device in enumerate(devices):
            row = inference.filter((pl.col("device") == device) & (pl.col("padding") == padding))
            if row.height == 0:
                continue
            r = row.row(0, named=True)
            x = i - 0.4 + width * (k + 0.5)
            label = f"padding = {padding}" if padding not in seen else None
            seen.add(padding)
            ax.bar(x, r["wall_s"], width * 0.92, color=PADDING_COLORS.get(padding, f"C{k}"), label=label)
            rate = r["n_sequences"] / r["wall_s"] if r["wall_s"] else float("nan")
            ax.annotate(
                f"{r['wall_s']:.3g} s\n{rate:.3g} seq/s",
                (x, r["wall_s"]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    walls = inference["wall_s"].drop_nulls().filter(inference["wall_s"].drop_nulls() > 0)
    if walls.len() and walls.max() / walls.min() > 50:
        ax.set_yscale("log")
        ax.set_ylim(top=walls.max() * 4)
    else:
        ax.set_ylim(0, (walls.max() if walls.len() else 1.0) * 1.25)
    ax.set_xticks(range(len(devices)), [labels[d] for d in devices], fontsize=8)
    ax.set_ylabel("inference wall time (s, excl. warm-up)")
    n_seq = sorted(set(inference["n_sequences"].drop_nulls().to_list()))
    max_len = sorted(set(inference["max_length"].drop_nulls().to_list()))
    ax.set_title(
        f"Inference time, {', '.join(map(str, n_seq))} sequences, max length "
        f"{', '.join(map(str, max_len))} (lower is better)",
        fontsize=9,
    )
    ax.grid(True, axis="y", alpha=0.3)
    plain_log_ticks(ax, "y")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    attach_facts(
        fig, FigureFacts("hwbench_inference_time", notes=["bars: one measurement each, no interval"])
    )
    return fig


def speedup_fig(speeds: pl.DataFrame, labels: dict[str, str], reference: str):
    """Grouped bars: one group per workload/setting, one bar per device, annotated "1.76x"."""
    devices = _ordered(speeds["device"].to_list(), DEVICE_ORDER)
    groups = list(dict.fromkeys(zip(speeds["workload"].to_list(), speeds["setting"].to_list(), strict=True)))
    fig, ax = plt.subplots(figsize=(max(5.0, 2.0 * len(groups) + 1.5), 4.2))
    width = 0.8 / max(1, len(devices))
    for k, device in enumerate(devices):
        xs, ys = [], []
        for i, (workload, setting) in enumerate(groups):
            row = speeds.filter(
                (pl.col("device") == device)
                & (pl.col("workload") == workload)
                & (pl.col("setting") == setting)
            )
            if row.height:
                xs.append(i - 0.4 + width * (k + 0.5))
                ys.append(row["speedup"][0])
        bars = ax.bar(
            xs, ys, width * 0.92, color=DEVICE_COLORS.get(device, f"C{k + 3}"), label=labels[device]
        )
        for bar, y in zip(bars, ys, strict=True):
            ax.annotate(
                f"{y:.2f}x",
                (bar.get_x() + bar.get_width() / 2, y),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.axhline(1.0, color="0.4", ls="--", lw=1)
    ax.set_xticks(range(len(groups)), [f"{w}\n{s}" for w, s in groups], fontsize=8)
    ax.set_ylabel(f"speedup vs {reference} (x, higher is faster)")
    top = speeds["speedup"].max() if speeds.height else 1.0
    ax.set_ylim(0, max(1.0, top) * 1.2)
    if len(devices) == 1:
        title = f"Speedup: only one device measured ({labels[devices[0]]}), 1.00x by definition"
    else:
        title = f"Speedup against {labels[reference]} (inference per padding; fine-tuning on one device)"
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    attach_facts(fig, FigureFacts("hwbench_speedup", notes=[f"reference device: {reference}"]))
    return fig


def scaling_fig(scaled: pl.DataFrame, labels: dict[str, str]):
    """Fine-tuning samples/s vs number of devices per device type, the dashed ideal-linear line from the
    1-device point, the scaling efficiency annotated at each point."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    devices = _ordered(scaled["device"].to_list(), DEVICE_ORDER)
    methods = _ordered(scaled["method"].to_list(), ("full", "frozen"))
    for k, device in enumerate(devices):
        color = DEVICE_COLORS.get(device, f"C{k + 3}")
        for method in methods:
            sub = scaled.filter((pl.col("device") == device) & (pl.col("method") == method)).sort("n_devices")
            if sub.height == 0:
                continue
            suffix = f", {method}" if len(methods) > 1 else ""
            ax.plot(sub["n_devices"], sub["samples_per_s"], "o-", color=color, label=labels[device] + suffix)
            if sub["ideal_samples_per_s"].null_count() < sub.height:
                ax.plot(sub["n_devices"], sub["ideal_samples_per_s"], "--", color=color, lw=1, alpha=0.7)
            for r in sub.iter_rows(named=True):
                eff = r["scaling_efficiency"]
                if eff is not None and not math.isnan(eff):
                    ax.annotate(
                        f"{eff:.0%}",
                        (r["n_devices"], r["samples_per_s"]),
                        xytext=(4, -10),
                        textcoords="offset points",
                        fontsize=7,
                        color=color,
                    )
    ax.plot([], [], "--", color="0.4", lw=1, label="ideal linear (from 1 device)")
    counts = sorted(set(scaled["n_devices"].drop_nulls().to_list()))
    style_axes(
        ax,
        xlabel="number of devices",
        ylabel="fine-tuning throughput (samples/s)",
        logy=True,
        title="Fine-tuning scaling (annotation: scaling efficiency)",
        fontsize=8,
        loc="upper left",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    ax.set_xlim(min(counts) / 1.3, max(counts) * 1.3)
    fig.tight_layout()
    attach_facts(fig, FigureFacts("hwbench_scaling", notes=["dashed: ideal linear scaling from 1 device"]))
    return fig


def hwbench_figures(
    inference_csv: str,
    finetune_csv: str,
    outputs: dict[str, str],
    *,
    reference: str | None = None,
    dpi: int,
) -> pl.DataFrame:
    """Write the three benchmark figures; ``outputs`` holds ``{inference_time,speedup,scaling}_{png,svg}``.
    Returns the speedup table the speedup figure shows."""
    inference = read_inference(inference_csv)
    finetune = read_finetune(finetune_csv)
    ref = resolve_reference(inference, finetune, reference)
    labels = device_labels(inference, finetune)
    speeds = speedups(inference, finetune, ref)
    figures = {
        "inference_time": inference_time_fig(inference),
        "speedup": speedup_fig(speeds, labels, ref),
        "scaling": scaling_fig(scaling(finetune), labels),
    }
    for name, fig in figures.items():
        save_figure(fig, outputs[f"{name}_png"], outputs[f"{name}_svg"], dpi)
    return speeds


# -------------------------------------------------------------------------------------------- markdown
def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pl.DataFrame, headers: dict[str, str]) -> str:
    """``frame`` as a GitHub Markdown table; ``headers`` maps column -> header (and sets the order)."""
    cols = list(headers)
    lines = ["| " + " | ".join(headers.values()) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in frame.iter_rows(named=True)]
    return "\n".join(lines)


def hwbench_table_markdown(inference_csv: str, finetune_csv: str, *, reference: str | None = None) -> str:
    """The inference and fine-tuning tables, then the speedups against the reference device, as Markdown."""
    inference = read_inference(inference_csv)
    finetune = read_finetune(finetune_csv)
    ref = resolve_reference(inference, finetune, reference)
    speeds = speedups(inference, finetune, ref).with_columns(
        pl.col("speedup").map_elements(lambda v: f"{v:.2f}x", return_dtype=pl.String)
    )
    inf_md = markdown_table(
        inference,
        {
            "device": "device",
            "device_name": "device name",
            "padding": "padding",
            "max_length": "max length",
            "n_sequences": "sequences",
            "warmup_s": "warm-up (s)",
            "wall_s": "wall (s)",
            "seq_per_s": "seq/s",
            "tokens_per_s": "tokens/s",
            "padded_tokens_per_s": "padded tokens/s",
        },
    )
    ft_md = markdown_table(
        finetune.sort("device", "n_devices"),
        {
            "device": "device",
            "device_name": "device name",
            "n_devices": "devices",
            "method": "method",
            "epochs_timed": "epochs timed",
            "wall_s_per_epoch": "wall per epoch (s)",
            "samples_per_s": "samples/s",
            "speedup_vs_one": "speedup vs 1 device",
            "scaling_efficiency": "scaling efficiency",
        },
    )
    sp_md = markdown_table(
        speeds,
        {
            "workload": "workload",
            "setting": "setting",
            "device": "device",
            "device_name": "device name",
            "speedup": f"speedup vs {ref}",
        },
    )
    return (
        f"### Inference\n\n{inf_md}\n\n### Fine-tuning\n\n{ft_md}\n\n### Speedup against {ref}\n\n{sp_md}\n"
    )
