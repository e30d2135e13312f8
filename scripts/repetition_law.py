"""Snakemake entry point: the data-constrained law on an objective's repetition runs (plmscale.study_laws)."""

import json
from pathlib import Path

from plmscale.atomic import write_json_atomic
from plmscale.law_plots import repetition_figure
from plmscale.plots import save_figure
from plmscale.snake import logged
from plmscale.study_laws import study_repetition

with logged(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    runs = [{"done": d, "eval": e} for d, e in zip(i.done, i.evals, strict=True)]
    result = study_repetition(runs, i.fit)
    write_json_atomic(o.json, result)
    print(json.dumps({k: result.get(k) for k in ("law", "interval", "skipped_reason", "caveat")}, indent=2))
    curves = {json.loads(Path(d).read_text())["run_id"]: m for d, m in zip(i.done, i.metrics, strict=True)}
    save_figure(repetition_figure(result, curves, snakemake.wildcards.objective), o.png, o.svg,
                snakemake.params.dpi)  # fmt: skip
