# Sharded tokenization: one job per (split, source, shard), each a memory-mapped token store of a
# contiguous record range, read through the split FASTA's index (the job reads only its part).


rule tokenize_shard:
    input:
        fasta="results/split/{split}/{source}.fasta",
        index="results/split/{split}/{source}.fasta.index.json",
    output:
        ids="results/tokens/{split}/{source}/shard{shard}/ids.npy",
        offsets="results/tokens/{split}/{source}/shard{shard}/offsets.npy",
        manifest="results/tokens/{split}/{source}/shard{shard}/manifest.json",
    params:
        num_shards=config["tokenize"]["shards"],
        code=script_code("tokenize_shard"),
    log:
        "logs/tokenize/{split}/{source}/shard{shard}.log",
    script:
        "../scripts/tokenize_shard.py"


rule tokens_ready:
    # one file standing for all of a split's shards: every training and evaluation job depends on it alone,
    # not on 3 files per shard (the paper grid's 64 shards x 2 sources made the DAG build check ~280k paths)
    input:
        lambda w: token_files(w.split),
    output:
        "results/tokens/{split}/ready.json",
    log:
        "logs/tokenize/{split}/ready.log",
    run:
        import json as _json

        shards = sorted({str(Path(f).parent) for f in input})
        manifests = {d: _json.loads(Path(d, "manifest.json").read_text()) for d in shards}
        ready = {d: {k: m[k] for k in ("num_sequences", "num_tokens", "files")} for d, m in manifests.items()}
        tmp = Path(output[0]).with_name(".ready.json.tmp")
        tmp.write_text(_json.dumps({"shards": ready}, indent=1, sort_keys=True))
        tmp.replace(output[0])
        Path(log[0]).write_text(f"{len(shards)} shards of split {wildcards.split}\n")
