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


def test_law_labels_carry_the_interval_and_unfitted_laws_their_reason():
    from plmscale.plots import interval_label, not_fitted_label

    law = {"coefficient": 1234.5, "exponent": 0.61}
    assert (
        interval_label("approach2", "n_opt", law, (0.52, 0.7))
        == "Approach 2: N_opt = 1.23e+03 · C^0.610 [0.520, 0.700]"
    )
    assert interval_label("approach1", "loss", law, None) == "Approach 1: L = 1.23e+03 · C^0.610"
    label = not_fitted_label("approach3", "did not converge (STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT)")
    assert label.replace("\n", " ") == (
        "Approach 3: not fitted — did not converge (STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT)"
    )
    assert max(len(line) for line in label.splitlines()) <= 60
