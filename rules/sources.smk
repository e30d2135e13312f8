# Derived sources (plmscale.mmseqs_sources): MMseqs2 databases (ColabFoldDB) exported to FASTA, and one
# downloaded FASTA minus the keys of another source (UR90/50 = UniRef90 - UniRef50 representatives).
import re
from types import SimpleNamespace

from plmscale.mmseqs_sources import archive_name, archive_source, check_source_refs

check_source_refs(config)

MMSEQS_ARCHIVES = sorted(
    {archive_name(s["url"]) for s in config["sources"].values() if s["kind"] == "mmseqs_db"}
)


def _archive_spec(wildcards):
    return archive_source(config["sources"], wildcards.archive)


def _from_spec(wildcards):
    return config["sources"][wildcards.source]["from"]


rule mmseqs_db_archive:
    # one verified download per archive, shared by the sources that export parts of it (scripts/download.py
    # writes any file: `fasta` is only the name of its output)
    output:
        fasta="resources/mmseqs_db/archive/{archive}",
        manifest="resources/mmseqs_db/archive/{archive}.manifest.json",
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in MMSEQS_ARCHIVES) or "(?!)",
    params:
        url=lambda w: _archive_spec(w)["url"],
        sha256=lambda w: _archive_spec(w).get("sha256"),
        md5=lambda w: _archive_spec(w).get("md5"),
        size=None,
        metalink=None,
        release=None,
        code=script_code("download"),
    retries: 2
    log:
        "logs/download/mmseqs_db_{archive}.log",
    script:
        "../scripts/download.py"


rule mmseqs_db_source:
    input:
        archive=lambda w: f"resources/mmseqs_db/archive/{archive_name(config['sources'][w.source]['url'])}",
    output:
        fasta="resources/mmseqs_db/{source}.fasta",
        report="resources/mmseqs_db/{source}.report.json",
    params:
        db=lambda w: config["sources"][w.source]["db"],
        clusters=lambda w: config["sources"][w.source].get("clusters"),
        subset=lambda w: config["sources"][w.source].get("subset", "all"),
        code=script_code("mmseqs_db_source"),
    # cluster.mmseqs and cluster.scratch (where the archive's databases are extracted) are read by the
    # script from the config: they change no output
    log:
        "logs/sources/mmseqs_db_{source}.log",
    script:
        "../scripts/mmseqs_db_source.py"


rule subtract_from_download:
    # the `from` file of a subtract source (e.g. uniref90.fasta.gz, kept gzipped as downloaded)
    output:
        fasta="resources/subtract/{source}.from.fasta",
        manifest="resources/subtract/{source}.from.manifest.json",
    params:
        url=lambda w: _from_spec(w)["url"],
        sha256=lambda w: _from_spec(w).get("sha256"),
        md5=lambda w: _from_spec(w).get("md5"),
        size=lambda w: _from_spec(w).get("size"),
        metalink=lambda w: _from_spec(w).get("metalink"),
        release=lambda w: _from_spec(w).get("release"),
        code=script_code("download"),
    retries: 2
    log:
        "logs/download/subtract_{source}.log",
    script:
        "../scripts/download.py"


rule subtract_source:
    input:
        from_fasta="resources/subtract/{source}.from.fasta",
        minus_fasta=lambda w: source_fasta(SimpleNamespace(source=config["sources"][w.source]["minus"])),
    output:
        fasta="resources/subtract/{source}.fasta",
        report="resources/subtract/{source}.report.json",
    params:
        key_pattern=lambda w: config["sources"][w.source].get("key_pattern", r"^UniRef\d+_(.+)$"),
        code=script_code("subtract_source"),
    log:
        "logs/sources/subtract_{source}.log",
    script:
        "../scripts/subtract_source.py"
