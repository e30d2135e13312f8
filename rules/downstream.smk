# Downstream evaluation (ProtST's localization tasks): data sets -> one job per (method, model) training a
# classifier per data set -> results table -> accuracy-vs-pre-training-compute figure.
#
# Data sets: kind "table" (downloaded split files, verified by config checksums or the lock file of observed
# ones in downstream.lock_dir, converted once to Parquet with a counts report, and checked for leakage against
# the study's pre-training clusters); kind "proxy" (the embedded sample's offline stand-in: computed
# hydropathy labels on the study's held-out proteins).  Models: the study's runs of downstream.objectives (at
# downstream.budgets, or every budget) and the external Hugging Face checkpoints of downstream.models (local
# paths, checked when the job starts).
# Methods: frozen (backbone frozen, MLP head: the blog's recipe) and full fine-tuning; plmscale.finetune.
#
# Each classifier job runs under train.launcher with downstream.devices processes on train.device in
# train.precision (execution settings: globals, not params, so changing them reruns nothing).
import json as _json
import re

from plmscale.downstream_specs import ModelSpec
from plmscale.downstream_config import own_model_name, parse_downstream

DS = parse_downstream(config["downstream"], STUDY.objectives, [flops for flops, _ in STUDY.budgets])
if DS.skipped_objectives:
    print(
        f"note: downstream.objectives {list(DS.skipped_objectives)} are not in grid.objectives: no runs of "
        "theirs to evaluate",
        file=sys.stderr,
    )
MODELS = {m.name: m for m in DS.external}
for _p in STUDY.isoflop_points():
    if _p.objective in DS.objectives and _p.replicate == 0 and DS.takes_budget(_p.flops):
        _name = own_model_name(_p.objective, _p.budget, _p.shape_name)
        MODELS[_name] = ModelSpec(
            name=_name, kind="own", path=f"{run_dir(_p)}/model", objective=_p.objective,
            pretrain_flops=float(_p.flops), n_params=int(_p.n_params),
        )  # fmt: skip
DOWNSTREAM_EXECUTION = _json.dumps(
    {"device": config["train"]["device"], "precision": config["train"]["precision"]}, sort_keys=True
)
DOWNSTREAM_LAUNCHER = launch_prefix(config["train"]["launcher"])
DOWNSTREAM_DEVICES = int(config["downstream"].get("devices", 1))
if DOWNSTREAM_DEVICES > 1 and not DOWNSTREAM_LAUNCHER:
    raise ValueError(
        f"downstream.devices = {DOWNSTREAM_DEVICES} needs a launcher that starts that many processes: set "
        "train.launcher (e.g. 'torchrun --standalone --nproc_per_node={devices}' or 'srun'), or devices: 1"
    )


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DS.datasets) or "NO_DATASET",
    method="frozen|full",
    model="|".join(re.escape(m) for m in sorted(MODELS, key=len, reverse=True)) or "NO_MODEL",


rule downstream_download:
    # every split file of a table data set; the lock file is updated in place (not an output)
    output:
        "resources/downstream/{dataset}/download.json",
    log:
        "logs/downstream/download/{dataset}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        spec=lambda w: _json.dumps(DS.datasets[w.dataset].to_dict(), sort_keys=True),
        lock=lambda w: f"{DS.lock_dir}/{w.dataset}.lock.tsv",
        code=script_code("downstream_download"),
    script:
        "../scripts/downstream_download.py"


rule downstream_convert:
    input:
        "resources/downstream/{dataset}/download.json",
    output:
        data="results/downstream/data/{dataset}.parquet",
        report="results/downstream/data/{dataset}.report.json",
    log:
        "logs/downstream/convert/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(DS.table_datasets()) or "NO_DATASET",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=lambda w: _json.dumps(DS.datasets[w.dataset].to_dict(), sort_keys=True),
        code=script_code("downstream_convert"),
    script:
        "../scripts/downstream_convert.py"


rule proxy_dataset:
    input:
        valid=split_fastas("valid"),
        test=split_fastas("test"),
    output:
        data="results/downstream/data/{dataset}.parquet",
        report="results/downstream/data/{dataset}.report.json",
    log:
        "logs/downstream/proxy/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(DS.proxy_datasets()) or "NO_DATASET",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        window=lambda w: DS.datasets[w.dataset].window,
        threshold=lambda w: DS.datasets[w.dataset].threshold,
        max_proteins=lambda w: DS.datasets[w.dataset].max_proteins,
        code=script_code("proxy_dataset"),
    script:
        "../scripts/proxy_dataset.py"


rule downstream_leakage:
    # evaluation proteins in an MMseqs2 cluster with a pre-training protein (the study's clustering)
    input:
        data="results/downstream/data/{dataset}.parquet",
        pretrain=split_fastas("train"),
    output:
        "results/downstream/data/{dataset}.leakage.json",
    log:
        "logs/downstream/leakage/{dataset}.log",
    conda:
        "../envs/mmseqs2.yaml"
    threads: config["cluster"]["threads"]
    resources:
        mem_mb=config["cluster"]["mem_mb"],
        runtime=720,
    params:
        # the clustering itself; threads, memory and scratch are execution settings read by the script
        cluster=_json.dumps(
            {k: config["cluster"][k] for k in ("mmseqs", "method", "min_seq_id", "coverage", "cov_mode")},
            sort_keys=True,
        ),
        code=script_code("downstream_leakage"),
    script:
        "../scripts/downstream_leakage.py"


rule finetune:
    # one job per (method, model): the backbone is loaded once and one classifier is trained per data set
    # (frozen: one embedding pass per data set; full: each data set starts again from the checkpoint)
    input:
        data=expand("results/downstream/data/{dataset}.parquet", dataset=list(DS.datasets)),
        model=model_inputs,
    output:
        result=expand("results/downstream/{dataset}/{{method}}/{{model}}.json", dataset=list(DS.datasets)),
        head=expand("results/downstream/{dataset}/{{method}}/{{model}}.head.pt", dataset=list(DS.datasets)),
    log:
        "logs/downstream/{method}/{model}.log",
    conda:
        "../envs/python.yaml"
    threads: config["train"]["threads"]
    resources:
        devices=DOWNSTREAM_DEVICES,
        gpu=0 if config["train"]["device"] == "cpu" else DOWNSTREAM_DEVICES,
        mem_mb=32000,
        runtime=720 * max(1, len(DS.datasets)),  # 12 h per data set
    params:
        job=finetune_job,
        code=code_digest("downstream_cli"),
    # snakemake --lint: DOWNSTREAM_LAUNCHER, TRAIN_PYTHON and DOWNSTREAM_EXECUTION are globals on purpose:
    # execution settings (launcher, interpreter, device, precision); as params, changing them would rerun
    # every classifier.  The package is on PYTHONPATH for every job (rules/common.smk).
    shell:
        "export PLMSCALE_DEVICES={resources.devices}; "
        "{DOWNSTREAM_LAUNCHER} {TRAIN_PYTHON:q} -m plmscale.downstream_cli finetune --job {params.job:q} "
        "--execution {DOWNSTREAM_EXECUTION:q} --threads {threads} > {log:q} 2>&1"


rule downstream_table:
    input:
        results=finetune_outputs(),
        reports=expand("results/downstream/data/{dataset}.report.json", dataset=list(DS.datasets)),
        leakage=expand(
            "results/downstream/data/{dataset}.leakage.json",
            dataset=DS.table_datasets() if DS.leakage else [],
        ),
    output:
        results="results/downstream/results.csv",
        datasets="results/downstream/datasets.csv",
    log:
        "logs/downstream/table.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=script_code("downstream_table"),
    script:
        "../scripts/downstream_table.py"


rule plot_downstream:
    input:
        "results/downstream/results.csv",
    output:
        png=report(
            "results/figures/downstream_compute.png",
            caption="report/downstream_compute.rst",
            category="Downstream",
            labels={"figure": "accuracy vs pre-training compute"},
        ),
        svg="results/figures/downstream_compute.svg",
        facts="results/figures/downstream_compute.json",
    log:
        "logs/plots/downstream.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["plots"]["dpi"],
        code=script_code("plot_downstream"),
    script:
        "../scripts/plot_downstream.py"


rule downstream:
    # the downstream stage alone: every classifier, the tables and the figure
    input:
        "results/downstream/results.csv",
        "results/figures/downstream_compute.png",
