"""The shared frame of every figure (plmscale.plots.style_axes), read back from matplotlib."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from plmscale.plots import style_axes


def test_style_axes_sets_log_scales_labels_grid_and_legend():
    fig, (left, right) = plt.subplots(1, 2)
    for ax in (left, right):
        ax.plot([1, 10, 100], [3.0, 2.5, 2.2], label="run")
    style_axes(left, xlabel="training compute C (FLOPs)", ylabel="loss (nats/token)", title="t", logy=True,
               fontsize=6, legend_title="budget", loc="lower right")  # fmt: skip
    style_axes(right, xlabel="tokens D")
    assert (left.get_xscale(), left.get_yscale()) == ("log", "log")
    assert (right.get_xscale(), right.get_yscale()) == ("log", "linear")
    assert left.get_xlabel() == "training compute C (FLOPs)" and left.get_ylabel() == "loss (nats/token)"
    assert left.get_title() == "t" and right.get_title() == "" and right.get_ylabel() == ""
    legend = left.get_legend()
    assert legend.get_title().get_text() == "budget"
    assert [t.get_text() for t in legend.get_texts()] == ["run"]
    assert legend.get_texts()[0].get_fontsize() == 6
    assert legend._loc == 4  # "lower right"
    assert right.get_legend().get_title().get_text() == ""
    assert all(line.get_visible() for line in left.xaxis.get_gridlines())
    plt.close(fig)
