# Reproduction of the paper's laws and figures from the authors' released validation logs.
# Target: `snakemake paper_figures` (not part of `all`: it downloads the published logs).

PAPER_OBJECTIVES = ("clm", "mlm")
PAPER_FIGURES = ("isoflop", "optimal_allocation", "loss_vs_compute", "extrapolation")
PAPER_EXTRA_FIGURES = ("ur50_vs_unimeta", "mask_ratio", "transfer", "transfer_law")


rule paper_logs:
    output:
        "resources/paper_logs/manifest.json",
    log:
        "logs/paper/fetch.log",
    retries: 2
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        manifest=str(Path(workflow.basedir) / "config" / "paper_logs.sha256.tsv"),
        base_url=config["paper"]["base_url"],
        code=script_code("paper_fetch"),
    script:
        "../scripts/paper_fetch.py"


rule paper_tables:
    input:
        "resources/paper_logs/manifest.json",
    output:
        points="results/paper/points.parquet",
        finals="results/paper/finals.parquet",
        mismatches="results/paper/size_mismatches.tsv",
        mask_ratio="results/paper/mask_ratio.parquet",
        transfer="results/paper/transfer.parquet",
        ur50="results/paper/ur50.parquet",
    log:
        "logs/paper/tables.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        last_k=config["paper"]["last_k"],
        code=script_code("paper_tables"),
    script:
        "../scripts/paper_tables.py"


rule paper_fit:
    input:
        points="results/paper/points.parquet",
        finals="results/paper/finals.parquet",
        manifest="resources/paper_logs/manifest.json",
    output:
        "results/paper/fits/{objective}.json",
    log:
        "logs/paper/fit_{objective}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        n_bootstrap=config["paper"]["n_bootstrap"],
        seed=config["paper"]["seed"],
        approach1_bins=config["paper"]["approach1_bins"],
        approach2_exclude_edge=config["paper"]["approach2_exclude_edge"],
        approach3_grid=config["paper"]["approach3_grid"],
        extrapolation_cutoff=config["paper"]["extrapolation_cutoff"],
        code=script_code("paper_fit"),
    script:
        "../scripts/paper_fit.py"


rule paper_coefficients:
    input:
        expand("results/paper/fits/{objective}.json", objective=PAPER_OBJECTIVES),
    output:
        csv="results/paper/coefficients.csv",
        md=report(
            "results/paper/coefficients.md",
            caption="report/paper_coefficients.rst",
            category="Paper reproduction",
        ),
        extrapolation="results/paper/extrapolation.csv",
        method_steps=report(
            "results/paper/method_steps.md",
            caption="report/paper_method_steps.rst",
            category="Paper reproduction",
        ),
    log:
        "logs/paper/coefficients.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=script_code("paper_coefficients"),
    script:
        "../scripts/paper_coefficients.py"


rule paper_transfer:
    input:
        "results/paper/transfer.parquet",
    output:
        json="results/paper/transfer_law.json",
        csv="results/paper/transfer_points.csv",
    log:
        "logs/paper/transfer.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n_points=config["paper"]["transfer_points"],
        code=script_code("paper_transfer"),
    script:
        "../scripts/paper_transfer.py"


rule paper_plots:
    input:
        points="results/paper/points.parquet",
        finals="results/paper/finals.parquet",
        fits=expand("results/paper/fits/{objective}.json", objective=PAPER_OBJECTIVES),
        mask_ratio="results/paper/mask_ratio.parquet",
        transfer="results/paper/transfer.parquet",
        transfer_law="results/paper/transfer_law.json",
        transfer_points="results/paper/transfer_points.csv",
        ur50="results/paper/ur50.parquet",
    output:
        **{
            f"{objective}_{fig}_{ext}": (
                report(
                    f"results/paper/figures/{objective}_{fig}.{ext}",
                    caption=f"report/paper_{fig}.rst",
                    category="Paper reproduction",
                    labels={"objective": objective, "figure": fig},
                )
                if ext == "png"
                else f"results/paper/figures/{objective}_{fig}.{ext}"
            )
            for objective in PAPER_OBJECTIVES
            for fig in PAPER_FIGURES
            for ext in ("png", "svg", "json")  # json: the figure's facts (plmscale.figure_style)
        },
        **{
            f"{fig}_{ext}": (
                report(
                    f"results/paper/figures/{fig}.{ext}",
                    caption=f"report/paper_{fig}.rst",
                    category="Paper reproduction",
                    labels={"objective": "both", "figure": fig},
                )
                if ext == "png"
                else f"results/paper/figures/{fig}.{ext}"
            )
            for fig in PAPER_EXTRA_FIGURES
            for ext in ("png", "svg", "json")  # json: the figure's facts (plmscale.figure_style)
        },
    log:
        "logs/paper/plots.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dpi=config["plots"]["dpi"],
        code=script_code("paper_plots"),
    script:
        "../scripts/paper_plots.py"


rule paper_figures:
    input:
        rules.paper_plots.output,
        "results/paper/coefficients.csv",
        "results/paper/extrapolation.csv",
        "results/paper/method_steps.md",
        "results/paper/size_mismatches.tsv",
