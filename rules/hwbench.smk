# Hardware benchmark (the ProtST-on-Gaudi-2 comparison): inference and fine-tuning time per device and
# device count, plmscale.hwbench.  Each device of hwbench.devices gets its own rules, hwbench_infer_<device>
# and hwbench_finetune_<device>, so that a profile maps each to its partition (cpu -> the CPU partition,
# cuda -> the GPU partition, hpu -> the Gaudi partition) and one workflow run produces the whole comparison.
# A job whose device is absent fails at start (plmscale.devices.resolve_device), never on the CPU instead.
from plmscale.downstream_config import HW_DEVICES, hwbench_settings, parse_hwbench

HW = parse_hwbench(config.get("hwbench"), DS, [n for n, m in MODELS.items() if m.kind == "own"])
HW_LAUNCHER = launch_prefix(HW.launcher)


# rules exist for every device (a profile names them all); only hwbench.devices are requested
for _device in HW_DEVICES:

    rule:
        name:
            f"hwbench_infer_{_device}"
        input:
            **hwbench_inputs("infer"),
        output:
            f"results/hwbench/infer/{_device}.json",
        log:
            f"logs/hwbench/infer/{_device}.log",
        # hpu: the Gaudi stack (habana_frameworks) is not on conda channels: the site's Habana environment
        conda:
            "../envs/python.yaml"
        threads: config["train"]["threads"]
        resources:
            gpu=0 if _device == "cpu" else 1,
            mem_mb=16000 if _device == "cpu" else 32000,
            runtime=240 if _device == "cpu" else 120,
        params:
            job=hwbench_job(_device, "infer"),
            code=code_digest("downstream_cli"),
        # snakemake --lint: TRAIN_PYTHON (the interpreter) is an execution setting, a global on purpose: as a
        # param, a new venv path would re-measure.  The package is on PYTHONPATH for every job (common.smk).
        shell:
            "{TRAIN_PYTHON:q} -m plmscale.downstream_cli hwbench-infer --job {params.job:q} "
            "--threads {threads} > {log:q} 2>&1"

    rule:
        name:
            f"hwbench_finetune_{_device}"
        input:
            **hwbench_inputs("finetune"),
        output:
            f"results/hwbench/finetune/{_device}/{{n}}.json",
        log:
            f"logs/hwbench/finetune/{_device}/{{n}}.log",
        wildcard_constraints:
            n=r"[0-9]+",
        conda:
            "../envs/python.yaml"
        # the CPU: one core per process; accelerators: one device per process (--gpus=n)
        threads: (lambda w: int(w.n)) if _device == "cpu" else config["train"]["threads"]
        resources:
            devices=lambda w: int(w.n),
            gpu=(lambda w: 0) if _device == "cpu" else (lambda w: int(w.n)),
            mem_mb=32000 if _device == "cpu" else 64000,
            runtime=480 if _device == "cpu" else 240,
        params:
            job=hwbench_job(_device, "finetune"),
            code=code_digest("downstream_cli"),
        # snakemake --lint: HW_LAUNCHER and TRAIN_PYTHON are execution settings, globals on purpose (as params,
        # changing them would re-measure).  The package is on PYTHONPATH for every job (rules/common.smk).
        shell:
            "export PLMSCALE_DEVICES={resources.devices}; "
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
    log:
        "logs/hwbench/table.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference=HW.reference_device,
        code=script_code("hwbench_table"),
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
            for ext in ("png", "svg", "json")  # json: the figure's facts (plmscale.figure_style)
        },
    log:
        "logs/plots/hwbench.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference=HW.reference_device,
        dpi=config["plots"]["dpi"],
        code=script_code("plot_hwbench"),
    script:
        "../scripts/plot_hwbench.py"


rule hwbench:
    # the hardware benchmark alone
    input:
        hwbench_outputs(),
