# plmscale: a compute-optimal scaling study of protein language models (Cheng et al., NeurIPS 2024).
# This file only wires the stages together; all logic lives in the `plmscale` package (workflow/plmscale).
from snakemake.utils import min_version

min_version("9.0")


# No `configfile:` here: rules/common.smk merges the user's --configfile/--config layer over the embedded
# config/config.yaml by plmscale.config_merge (named collections such as `sources` replace, not merge).


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/sources.smk"
include: "rules/cluster.smk"
include: "rules/tokenize.smk"
include: "rules/train.smk"
include: "rules/fit.smk"
include: "rules/laws.smk"
include: "rules/downstream.smk"
include: "rules/hwbench.smk"
include: "rules/plots.smk"
include: "rules/paper.smk"
include: "rules/report.smk"


report: "rules/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),


rule data:
    # the data stage alone (sources -> validation -> clusters -> split -> token shards)
    input:
        token_sources("train"),
        token_sources("valid"),


rule runs:
    # every training run and its evaluation, without fits and figures
    input:
        [run_file(p, "done.json") for p in POINTS],
        [eval_file(p) for p in POINTS],
