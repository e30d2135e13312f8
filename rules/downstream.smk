# Downstream (thin): membrane vs soluble localization, linear probe on each frozen MLM encoder.
# Labels are computed proxies (Kyte-Doolittle hydropathy), not curated annotations; see README.


rule localization_labels:
    input:
        valid=split_fastas("valid"),
        test=split_fastas("test"),
    output:
        "results/downstream/labels.tsv",
    params:
        window=config["downstream"]["window"],
        threshold=config["downstream"]["threshold"],
        max_proteins=config["downstream"]["max_proteins"],
        code=script_code("localization_labels"),
    log:
        "logs/downstream/labels.log",
    script:
        "../scripts/localization_labels.py"


rule probe:
    input:
        labels="results/downstream/labels.tsv",
        config="results/runs/mlm/{budget}/{shape}/model/config.json",
        weights="results/runs/mlm/{budget}/{shape}/model/model.safetensors",
    output:
        "results/downstream/mlm/{budget}/{shape}.json",
    params:
        context=config["train"]["context"],
        l2=config["downstream"]["l2"],
        seed=config["train"]["seed"],
        code=script_code("probe"),
    threads: config["train"]["threads"]
    log:
        "logs/downstream/mlm/{budget}/{shape}.log",
    # train.device / train.precision are execution settings: the script reads them from the config, not
    # params, so changing them reruns nothing.  A device the job did not get fails (no CPU fallback).
    script:
        "../scripts/probe.py"


rule probe_table:
    input:
        probes=lambda w: [f"results/downstream/mlm/{p.budget}/{p.shape_name}.json" for p in points_of("mlm")],
        evals=lambda w: [eval_file(p) for p in points_of("mlm")],
    output:
        "results/downstream/accuracy.csv",
    params:
        code=script_code("probe_table"),
    log:
        "logs/downstream/table.log",
    script:
        "../scripts/probe_table.py"
