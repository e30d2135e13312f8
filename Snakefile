# plmscale: a compute-optimal scaling study of protein language models (Cheng et al., NeurIPS 2024).
# This file only wires the stages together; all logic lives in the `plmscale` package (workflow/plmscale).
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names a study (Snakemake would otherwise merge the two).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"



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


report: "rules/report/workflow.rst"


rule all:
    input:
        final_outputs(),
    default_target: True


rule data:
    # the data stage alone (sources -> validation -> clusters -> split -> token shards)
    input:
        token_manifests("train"),
        token_manifests("valid"),


rule runs:
    # every training run and its evaluation, without fits and figures
    input:
        [run_file(p, "done.json") for p in POINTS],
        [eval_file(p) for p in POINTS],
