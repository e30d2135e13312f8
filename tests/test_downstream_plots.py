"""Downstream-vs-compute and hardware-benchmark figures (plmscale.downstream_plots, plmscale.hwbench_plots)
on hand-built tables: the files are written, and the numbers they encode are the hand-worked ones."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
import pytest
from plmscale import downstream_plots as dp
from plmscale import hwbench_plots as hw

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_figure_files(png, svg):
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "<svg" in svg.read_text()


def _results_rows():
    def row(model, kind, objective, dataset, method, flops, acc, lo, hi, majority=0.6):
        return {
            "model": model,
            "kind": kind,
            "objective": objective,
            "dataset": dataset,
            "method": method,
            "pretrain_flops": flops,
            "n_params": None if kind == "external" and flops is None else 1_000_000,
            "test_accuracy": acc,
            "test_accuracy_lo": lo,
            "test_accuracy_hi": hi,
            "test_mcc": 0.3,
            "test_mcc_lo": 0.2,
            "test_mcc_hi": 0.4,
            "majority_accuracy": majority,
            "best_epoch": 3,
            "n_train": 100,
            "n_valid": 20,
            "n_test": 50,
        }

    return [
        row("mlm-1e17", "own", "mlm", "localization", "frozen", 1e17, 0.70, 0.65, 0.75),
        row("mlm-1e18", "own", "mlm", "localization", "frozen", 1e18, 0.74, 0.70, 0.78),
        row("clm-1e18", "own", "clm", "localization", "frozen", 1e18, 0.68, 0.63, 0.73),
        row("esm2_t6_8M", "external", "", "localization", "frozen", 1.2e20, 0.72, 0.68, 0.76),
        row("mystery-ckpt", "external", "", "localization", "frozen", None, 0.81, 0.79, 0.83),
        row("mlm-1e18", "own", "mlm", "localization", "full", 1e18, 0.80, 0.77, 0.83),
        row("esm2_t6_8M", "external", "", "localization", "full", 1.2e20, 0.82, 0.79, 0.85),
        row("mlm-1e18", "own", "mlm", "solubility", "frozen", 1e18, 0.61, 0.58, 0.64, majority=0.55),
    ]


def _inference(rows):
    cols = ["device", "device_name", "padding", "max_length", "n_sequences", "warmup_s", "wall_s"]
    frame = pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows], orient="row")
    return frame.with_columns(
        (pl.col("n_sequences") / pl.col("wall_s")).alias("seq_per_s"),
        (pl.col("n_sequences") * 300 / pl.col("wall_s")).alias("tokens_per_s"),
        (pl.col("n_sequences") * pl.col("max_length") / pl.col("wall_s")).alias("padded_tokens_per_s"),
    )


def _finetune(rows):
    cols = ["device", "device_name", "n_devices", "wall_s_per_epoch", "samples_per_s"]
    frame = pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows], orient="row")
    one = frame.filter(pl.col("n_devices") == 1).select("device", pl.col("samples_per_s").alias("one"))
    return (
        frame.join(one, on="device", how="left")
        .with_columns(
            pl.lit("full").alias("method"),
            pl.lit(2).alias("epochs_timed"),
            (pl.col("samples_per_s") / pl.col("one")).alias("speedup_vs_one"),
            (pl.col("samples_per_s") / (pl.col("n_devices") * pl.col("one"))).alias("scaling_efficiency"),
        )
        .drop("one")
    )


INFERENCE = [
    ("cpu", "Xeon", "max_length", 1024, 100, 1.0, 10.0),
    ("cpu", "Xeon", "none", 1024, 100, 1.0, 4.0),
    ("cuda", "NVIDIA H200", "max_length", 1024, 100, 0.5, 2.5),
    ("cuda", "NVIDIA H200", "none", 1024, 100, 0.5, 2.0),
]
FINETUNE = [
    ("cpu", "Xeon", 1, 120.0, 5.0),
    ("cuda", "NVIDIA H200", 1, 12.0, 50.0),
    ("cuda", "NVIDIA H200", 2, 6.5, 90.0),
    ("cuda", "NVIDIA H200", 4, 3.5, 160.0),
]


@pytest.fixture
def hw_tables(tmp_path):
    inf, ft = tmp_path / "inference.csv", tmp_path / "finetune.csv"
    _inference(INFERENCE).write_csv(inf)
    _finetune(FINETUNE).write_csv(ft)
    return inf, ft


def _outputs(tmp_path):
    return {
        f"{n}_{ext}": str(tmp_path / f"{n}.{ext}")
        for n in ("inference_time", "speedup", "scaling")
        for ext in ("png", "svg")
    }


def test_downstream_compute_figure_places_runs_and_lists_unplaced(tmp_path):
    csv = tmp_path / "results.csv"
    pl.DataFrame(_results_rows()).write_csv(csv)
    results = dp.read_results(csv)
    assert results["pretrain_flops"].dtype == pl.Float64
    assert results.filter(pl.col("kind") == "external")["objective"].null_count() == 3
    panel = results.filter((pl.col("dataset") == "localization") & (pl.col("method") == "frozen"))
    assert dp.unplaced_lines(panel) == ["mystery-ckpt 0.810 [0.790, 0.830]"]

    fig = dp.downstream_compute_fig(results)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert set(axes) == {"localization · frozen", "localization · full", "solubility · frozen"}
    assert fig.get_supylabel() == "test accuracy"
    ax = axes["localization · frozen"]
    assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in ax.texts]
    assert "not placed (no pre-training FLOPs):\nmystery-ckpt 0.810 [0.790, 0.830]" in texts
    assert "esm2_t6_8M" in texts  # the labelled star
    labels = ax.get_legend_handles_labels()[1]
    assert "this study, MLM (masked LM)" in labels and "this study, CLM (causal LM)" in labels
    assert "external checkpoint" in labels and "majority class (0.600)" in labels
    majority = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert [ln.get_ydata()[0] for ln in majority] == [0.6]
    assert not any(t.get_text().startswith("not placed") for t in axes["localization · full"].texts)
    plt.close(fig)

    png, svg = tmp_path / "compute.png", tmp_path / "compute.svg"
    dp.downstream_compute_figure(str(csv), str(png), str(svg), dpi=60)
    _assert_figure_files(png, svg)


def test_all_flops_missing_still_reads_numeric(tmp_path):
    csv = tmp_path / "results.csv"
    rows = [r for r in _results_rows() if r["pretrain_flops"] is None]
    pl.DataFrame(rows, schema_overrides={"pretrain_flops": pl.Float64, "n_params": pl.Int64}).write_csv(csv)
    results = dp.read_results(csv)
    assert results["pretrain_flops"].dtype == pl.Float64 and results["n_params"].dtype == pl.Int64
    fig = dp.downstream_compute_fig(results)
    assert any(t.get_text().startswith("not placed") for t in fig.axes[0].texts)
    plt.close(fig)


def test_speedups_and_scaling_hand_worked(hw_tables):
    inference, finetune = hw.read_inference(hw_tables[0]), hw.read_finetune(hw_tables[1])
    assert hw.resolve_reference(inference, finetune) == "cuda"
    speeds = hw.speedups(inference, finetune, "cuda")
    got = {(r["workload"], r["setting"], r["device"]): r["speedup"] for r in speeds.iter_rows(named=True)}
    assert got == pytest.approx(
        {
            ("inference", "padding=max_length", "cpu"): 2.5 / 10.0,  # 0.25
            ("inference", "padding=max_length", "cuda"): 1.0,
            ("inference", "padding=none", "cpu"): 2.0 / 4.0,
            ("inference", "padding=none", "cuda"): 1.0,
            ("fine-tuning, 1 device", "method=full", "cpu"): 12.0 / 120.0,  # 0.1
            ("fine-tuning, 1 device", "method=full", "cuda"): 1.0,
        }
    )
    # against the CPU, the GPU is 4x faster at max_length padding and 10x at fine-tuning
    cpu_ref = hw.speedups(inference, finetune, "cpu").filter(pl.col("device") == "cuda")
    assert cpu_ref["speedup"].to_list() == pytest.approx([4.0, 2.0, 10.0])

    scaled = hw.scaling(finetune).filter(pl.col("device") == "cuda")
    assert scaled["n_devices"].to_list() == [1, 2, 4]
    assert scaled["ideal_samples_per_s"].to_list() == pytest.approx([50.0, 100.0, 200.0])
    assert scaled["speedup_vs_one"].to_list() == pytest.approx([1.0, 1.8, 3.2])
    assert scaled["scaling_efficiency"].to_list() == pytest.approx([1.0, 0.9, 0.8])


def test_hwbench_figures_and_markdown(hw_tables, tmp_path):
    outputs = _outputs(tmp_path)
    speeds = hw.hwbench_figures(str(hw_tables[0]), str(hw_tables[1]), outputs, dpi=60)
    for name in ("inference_time", "speedup", "scaling"):
        _assert_figure_files(tmp_path / f"{name}.png", tmp_path / f"{name}.svg")
    assert speeds["reference"].unique().to_list() == ["cuda"]
    svg = (tmp_path / "speedup.svg").read_text()
    assert "0.25x" in svg and "0.10x" in svg and "1.00x" in svg

    fig = hw.speedup_fig(speeds, hw.device_labels(hw.read_inference(hw_tables[0])), "cuda")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.10x", "0.25x", "0.50x", "1.00x", "1.00x", "1.00x"]
    assert "cuda (NVIDIA H200)" in ax.get_title()
    plt.close(fig)

    fig = hw.scaling_fig(hw.scaling(hw.read_finetune(hw_tables[1])), {"cpu": "cpu", "cuda": "cuda"})
    assert {"90%", "80%"} <= {t.get_text() for t in fig.axes[0].texts}
    plt.close(fig)

    fig = hw.inference_time_fig(hw.read_inference(hw_tables[0]))
    assert "10 s\n10 seq/s" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)

    md = hw.hwbench_table_markdown(str(hw_tables[0]), str(hw_tables[1]))
    assert "### Inference" in md and "### Fine-tuning" in md and "### Speedup against cuda" in md
    assert "| inference | padding=max_length | cpu | Xeon | 0.25x |" in md
    assert "| fine-tuning, 1 device | method=full | cpu | Xeon | 0.10x |" in md
    assert "| cuda | NVIDIA H200 | 4 | full | 2 | 3.5 | 160 | 3.2 | 0.8 |" in md


def test_single_device_and_explicit_reference(tmp_path):
    inf, ft = tmp_path / "inference.csv", tmp_path / "finetune.csv"
    _inference([r for r in INFERENCE if r[0] == "cpu"]).write_csv(inf)
    _finetune([r for r in FINETUNE if r[0] == "cpu"]).write_csv(ft)
    outputs = _outputs(tmp_path)
    speeds = hw.hwbench_figures(str(inf), str(ft), outputs, dpi=60)
    assert speeds["speedup"].to_list() == pytest.approx([1.0, 1.0, 1.0])
    fig = hw.speedup_fig(speeds, {"cpu": "cpu (Xeon)"}, "cpu")
    assert "only one device" in fig.axes[0].get_title() and "1.00x" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="hpu"):
        hw.hwbench_figures(str(inf), str(ft), outputs, reference="hpu", dpi=60)


def test_empty_tables_raise_naming_the_file(hw_tables, tmp_path):
    header_only = tmp_path / "inference_empty.csv"
    _inference(INFERENCE).head(0).write_csv(header_only)
    with pytest.raises(ValueError, match=r"inference_empty\.csv"):
        hw.hwbench_figures(str(header_only), str(hw_tables[1]), _outputs(tmp_path), dpi=60)
    blank = tmp_path / "finetune_blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match=r"finetune_blank\.csv"):
        hw.hwbench_table_markdown(str(hw_tables[0]), str(blank))
