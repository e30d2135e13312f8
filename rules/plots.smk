# Figures (PNG for the report, SVG for papers), each with a caption in the HTML report.


rule plot_objective:
    input:
        runs="results/fits/{objective}_runs.parquet",
        curves="results/fits/{objective}_curves.parquet",
        fits="results/fits/{objective}.json",
    output:
        **{
            f"{fig}_{ext}": (
                report(
                    f"results/figures/{{objective}}_{fig}.{ext}",
                    caption=f"report/{fig}.rst",
                    category="Scaling laws",
                    subcategory="{objective}",
                    labels={"objective": "{objective}", "figure": fig},
                )
                if ext == "png"
                else f"results/figures/{{objective}}_{fig}.{ext}"
            )
            for fig in FIGURES
            for ext in ("png", "svg", "json")  # json: the figure's facts (plmscale.figure_style)
        },
    log:
        "logs/plots/{objective}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dpi=config["plots"]["dpi"],
        code=script_code("plot_objective"),
    script:
        "../scripts/plot_objective.py"
