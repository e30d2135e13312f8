# Hardware benchmark (the ProtST-on-Gaudi-2 comparison): inference and fine-tuning time per device and
# device count, plmscale.hwbench.  Each device of hwbench.devices gets its own rules, hwbench_infer_<device>
# and hwbench_finetune_<device>, so that a profile maps each to its partition (cpu -> the CPU partition,
# cuda -> the GPU partition, hpu -> the Gaudi partition) and one workflow run produces the whole comparison.
# A job whose device is absent fails at start (plmscale.devices.resolve_device), never on the CPU instead.
from plmscale.downstream_config import HW_DEVICES, hwbench_settings, parse_hwbench

HW = parse_hwbench(config.get("hwbench"), DS, [n for n, m in MODELS.items() if m.kind == "own"])
HW_LAUNCHER = launch_prefix(HW.launcher)


def hwbench_outputs():
    if not HW.enabled:
        return []
    return [
        "results/hwbench/inference.csv",
        "results/hwbench/finetune.csv",
        "results/figures/hwbench_inference_time.png",
    ]


def hwbench_model():
    return MODELS[HW.model] if HW.enabled else None


def hwbench_job(device, kind):
    """The benchmark's settings as JSON (the rerun trigger: a change re-measures)."""

    def job(wildcards):
        common = {
            "model": hwbench_model().to_dict(), "dataset": HW.dataset,
            "data": f"results/downstream/data/{HW.dataset}.parquet", "n_classes": DS.n_classes(HW.dataset),
            "device": device, "precision": HW.precision,
        }  # fmt: skip
        if kind == "infer":
            return _json.dumps(
                {
                    **common, "head": f"results/downstream/{HW.dataset}/frozen/{HW.model}.head.pt",
                    "max_length": HW.max_length, "warmup": HW.warmup, "paddings": list(HW.paddings),
                    "compile": HW.compile, "hpu_graphs": HW.hpu_graphs,
                    "limits": {"test": HW.max_sequences}, "output": f"results/hwbench/infer/{device}.json",
                },
                sort_keys=True,
            )  # fmt: skip
        return _json.dumps(
            {
                **common, "n_devices": int(wildcards.n), "epochs": HW.epochs,
                "settings": hwbench_settings(HW, config["train"]["seed"]).to_dict(),
                "limits": {"train": HW.max_samples},
                "output": f"results/hwbench/finetune/{device}/{wildcards.n}.json",
            },
            sort_keys=True,
        )  # fmt: skip

    return job


# rules exist for every device (a profile names them all); only hwbench.devices are requested
for _device in HW_DEVICES:

    rule:
        name:
            f"hwbench_infer_{_device}"
        input:
            data=f"results/downstream/data/{HW.dataset}.parquet",
            head=f"results/downstream/{HW.dataset}/frozen/{HW.model}.head.pt",
        output:
            f"results/hwbench/infer/{_device}.json",
        params:
            job=hwbench_job(_device, "infer"),
            code=code_digest("downstream_cli"),
        threads: config["train"]["threads"]
        resources:
            gpu=0 if _device == "cpu" else 1,
        log:
            f"logs/hwbench/infer/{_device}.log",
        shell:
            "PYTHONPATH={TRAIN_PACKAGE_DIR:q}${{PYTHONPATH:+:$PYTHONPATH}} "
            "{TRAIN_PYTHON:q} -m plmscale.downstream_cli hwbench-infer --job {params.job:q} "
            "--threads {threads} > {log:q} 2>&1"

    rule:
        name:
            f"hwbench_finetune_{_device}"
        input:
            data=f"results/downstream/data/{HW.dataset}.parquet",
            model=model_files(HW.model) if HW.enabled else [],
        output:
            f"results/hwbench/finetune/{_device}/{{n}}.json",
        params:
            job=hwbench_job(_device, "finetune"),
            code=code_digest("downstream_cli"),
        wildcard_constraints:
            n=r"[0-9]+",
        # the CPU: one core per process; accelerators: one device per process (--gpus=n)
        threads: (lambda w: int(w.n)) if _device == "cpu" else config["train"]["threads"]
        resources:
            devices=lambda w: int(w.n),
            gpu=(lambda w: 0) if _device == "cpu" else (lambda w: int(w.n)),
        log:
            f"logs/hwbench/finetune/{_device}/{{n}}.log",
        shell:
            "export PLMSCALE_DEVICES={resources.devices}; "
            "PYTHONPATH={TRAIN_PACKAGE_DIR:q}${{PYTHONPATH:+:$PYTHONPATH}} "
            "{HW_LAUNCHER} {TRAIN_PYTHON:q} -m plmscale.downstream_cli hwbench-finetune --job {params.job:q} "
            "--threads {threads} > {log:q} 2>&1"


rule hwbench_table:
    input:
        infer=expand("results/hwbench/infer/{device}.json", device=HW.devices),
        finetune=expand("results/hwbench/finetune/{device}/{n}.json", device=HW.devices, n=HW.device_counts),
    output:
        inference="results/hwbench/inference.csv",
        finetune="results/hwbench/finetune.csv",
        markdown="results/hwbench/tables.md",
    params:
        reference=HW.reference_device,
        code=script_code("hwbench_table"),
    log:
        "logs/hwbench/table.log",
    script:
        "../scripts/hwbench_table.py"


rule plot_hwbench:
    input:
        inference="results/hwbench/inference.csv",
        finetune="results/hwbench/finetune.csv",
    output:
        **{
            f"{fig}_{ext}": (
                report(
                    f"results/figures/hwbench_{fig}.{ext}",
                    caption=f"report/hwbench_{'inference' if fig == 'inference_time' else fig}.rst",
                    category="Hardware benchmark",
                    labels={"figure": fig.replace("_", " ")},
                )
                if ext == "png"
                else f"results/figures/hwbench_{fig}.{ext}"
            )
            for fig in ("inference_time", "speedup", "scaling")
            for ext in ("png", "svg")
        },
    params:
        reference=HW.reference_device,
        dpi=config["plots"]["dpi"],
        code=script_code("plot_hwbench"),
    log:
        "logs/plots/hwbench.log",
    script:
        "../scripts/plot_hwbench.py"


rule hwbench:
    # the hardware benchmark alone
    input:
        hwbench_outputs(),
