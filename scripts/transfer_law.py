"""Snakemake entry point: the transfer law on the study's own transfer runs (see plmscale.study_laws)."""

from plmscale.atomic import write_json_atomic
from plmscale.law_plots import transfer_points_frame
from plmscale.paper_plots import transfer_law
from plmscale.plots import save_figure
from plmscale.snake import logged
from plmscale.study_laws import study_transfer

with logged(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    runs = [
        {"done": d, "metrics": m, "scratch_done": sd, "scratch_metrics": sm}
        for d, m, sd, sm in zip(i.done, i.metrics, i.scratch_done, i.scratch_metrics, strict=True)
    ]
    result, rows = study_transfer(runs, n_points=snakemake.params.n_points)
    points = transfer_points_frame(rows)
    tmp = o.csv + ".tmp"
    points.write_csv(tmp)
    __import__("os").replace(tmp, o.csv)
    write_json_atomic(o.json, result)
    for objective in ("clm", "mlm"):
        entry = result[objective]
        print(objective, entry.get("law") or entry.get("skipped_reason"), entry.get("leave_one_size_out"))
    save_figure(transfer_law(result, points, source="this study's runs"), o.png, o.svg, snakemake.params.dpi)
