# Local FASTA files (kind fasta, plmscale.sources), and derived sources (plmscale.mmseqs_sources): MMseqs2
# databases (ColabFoldDB) exported to FASTA, and one downloaded FASTA minus the keys of another source
# (UR90/50 = UniRef90 - UniRef50 representatives).
import re
from types import SimpleNamespace

from plmscale.mmseqs_sources import archive_name, archive_source, check_source_refs
from plmscale.sources import check_local_sources, local_path

check_source_refs(config)
check_local_sources(config["sources"], Path.cwd())  # the working directory: relative paths resolve here
FASTA_SOURCES = sorted(name for name, s in config["sources"].items() if s["kind"] == "fasta")

MMSEQS_ARCHIVES = sorted(
    {archive_name(s["url"]) for s in config["sources"].values() if s["kind"] == "mmseqs_db"}
)


rule fasta_source:
    # the user's file is the input: editing it (a newer mtime) reruns this copy and everything downstream
    input:
        lambda w: str(local_path(config["sources"][w.source])),
    output:
        fasta="resources/fasta/{source}.fasta",
        manifest="resources/fasta/{source}.manifest.json",
    log:
        "logs/sources/fasta_{source}.log",
    wildcard_constraints:
        source="|".join(re.escape(s) for s in FASTA_SOURCES) or "(?!)",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=1000,
        runtime=120,
    params:
        key=lambda w: f"sources.{w.source}",
        sha256=lambda w: config["sources"][w.source].get("sha256"),
        code=script_code("fasta_source"),
    script:
        "../scripts/fasta_source.py"


rule mmseqs_db_archive:
    # one verified download per archive, shared by the sources that export parts of it (scripts/download.py
    # writes any file: `fasta` is only the name of its output)
    output:
        fasta="resources/mmseqs_db/archive/{archive}",
        manifest="resources/mmseqs_db/archive/{archive}.manifest.json",
    log:
        "logs/download/mmseqs_db_{archive}.log",
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in MMSEQS_ARCHIVES) or "(?!)",
    retries: 2
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=720,
    params:
        url=lambda w: _archive_spec(w)["url"],
        sha256=lambda w: _archive_spec(w).get("sha256"),
        md5=lambda w: _archive_spec(w).get("md5"),
        size=None,
        metalink=None,
        release=None,
        code=script_code("download"),
    script:
        "../scripts/download.py"


rule mmseqs_db_source:
    input:
        archive=lambda w: f"resources/mmseqs_db/archive/{archive_name(config['sources'][w.source]['url'])}",
    output:
        fasta="resources/mmseqs_db/{source}.fasta",
        report="resources/mmseqs_db/{source}.report.json",
    log:
        "logs/sources/mmseqs_db_{source}.log",
    conda:
        "../envs/mmseqs2.yaml"
    # cluster.mmseqs and cluster.scratch (where the archive's databases are extracted) are read by the
    # script from the config: they change no output
    threads: 4
    resources:
        mem_mb=16000,
        runtime=720,
    params:
        db=lambda w: config["sources"][w.source]["db"],
        clusters=lambda w: config["sources"][w.source].get("clusters"),
        subset=lambda w: config["sources"][w.source].get("subset", "all"),
        code=script_code("mmseqs_db_source"),
    script:
        "../scripts/mmseqs_db_source.py"


rule subtract_from_download:
    # the `from` file of a subtract source (e.g. uniref90.fasta.gz, kept gzipped as downloaded)
    output:
        fasta="resources/subtract/{source}.from.fasta",
        manifest="resources/subtract/{source}.from.manifest.json",
    log:
        "logs/download/subtract_{source}.log",
    retries: 2
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=480,
    params:
        url=lambda w: _from_spec(w)["url"],
        sha256=lambda w: _from_spec(w).get("sha256"),
        md5=lambda w: _from_spec(w).get("md5"),
        size=lambda w: _from_spec(w).get("size"),
        metalink=lambda w: _from_spec(w).get("metalink"),
        release=lambda w: _from_spec(w).get("release"),
        code=script_code("download"),
    script:
        "../scripts/download.py"


rule subtract_source:
    input:
        from_fasta="resources/subtract/{source}.from.fasta",
        minus_fasta=lambda w: source_fasta(SimpleNamespace(source=config["sources"][w.source]["minus"])),
    output:
        fasta="resources/subtract/{source}.fasta",
        report="resources/subtract/{source}.report.json",
    log:
        "logs/sources/subtract_{source}.log",
    conda:
        "../envs/python.yaml"
    threads: 4
    resources:
        mem_mb=64000,
        runtime=480,
    params:
        key_pattern=lambda w: config["sources"][w.source].get("key_pattern", r"^UniRef\d+_(.+)$"),
        code=script_code("subtract_source"),
    script:
        "../scripts/subtract_source.py"
