"""Embedded protein sources: real proteins materialised from files shipped inside installed wheels.

- ``pyhmmer_proteome`` ("curated"): the annotated proteome shipped with pyhmmer's tests
  (``938293.PRJEB85.HG003687.faa``, 2,100 proteins).
- ``pyrodigal_metagenome`` ("metagenomic"): genes called by Prodigal in metagenomic mode (pyrodigal) on
  the genome and contigs shipped with pyrodigal's tests: a *Corynebacterium diphtheriae* genome, an
  *E. coli* contig and a metagenome assembly.  Translated with the bacterial code; a terminal ``*`` is
  kept so the validation stage's policy decides what to do with it.

Nothing is downloaded: both come from ``importlib.resources`` of the installed packages.

Local sources (kind ``fasta``): the user's own FASTA file, plain or gzipped (told apart by the gzip magic
bytes ``1f 8b``, not the name), copied byte for byte to ``resources/fasta/<source>.fasta`` while its sha256
is computed (:func:`copy_local_fasta`). A ``sha256`` in the config is checked; without one, the digest read
is recorded in the manifest next to the copy and in the job's log. A relative ``path`` resolves against the
working directory (``snakemake -d``, else where snakemake runs); a missing file is reported at parse time
with its config key (:func:`check_local_sources`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.fasta import read_fasta, write_fasta

PYHMMER_PROTEOME = ("pyhmmer", "tests/data/seqs/938293.PRJEB85.HG003687.faa")
PYRODIGAL_CONTIGS = (
    "GCF_001457455.1_NCTC11397_genomic.fna.gz",  # Corynebacterium diphtheriae NCTC11397, complete genome
    "MIIJ01000039.fna.gz",  # Escherichia coli contig (taxid 562)
    "SRR492066.fna.gz",  # metagenome assembly contig
)
EMBEDDED = ("pyhmmer_proteome", "pyrodigal_metagenome")


def _package_file(package: str, relative: str) -> Path:
    path = Path(str(importlib.resources.files(package).joinpath(relative)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed '{package}' wheel; reinstall it with the pinned "
            f"version from requirements.txt (pip install -r requirements.txt)"
        )
    return path


def _contigs(path: Path) -> Iterator[tuple[str, str]]:
    with gzip.open(path, "rt") as handle:
        name, chunks = None, []
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                if name is not None:
                    yield name, "".join(chunks)
                name, chunks = line[1:].split()[0], []
            elif line:
                chunks.append(line)
        if name is not None:
            yield name, "".join(chunks)


def pyrodigal_proteins() -> Iterator[tuple[str, str]]:
    """(id, protein) for every gene Prodigal (metagenomic mode) calls on the shipped contigs."""
    import pyrodigal

    finder = pyrodigal.GeneFinder(meta=True)
    for filename in PYRODIGAL_CONTIGS:
        for contig, dna in _contigs(_package_file("pyrodigal", f"tests/data/{filename}")):
            for index, gene in enumerate(finder.find_genes(dna.encode()), start=1):
                yield f"{contig}_{index}", gene.translate()


def materialise_embedded(name: str, out_fasta: Path) -> int:
    """Write embedded source ``name`` as FASTA; returns the number of records written."""
    if name == "pyhmmer_proteome":
        records = [(r.id, r.sequence) for r in read_fasta(_package_file(*PYHMMER_PROTEOME))]
    elif name == "pyrodigal_metagenome":
        records = list(pyrodigal_proteins())
    else:
        raise ValueError(f"unknown embedded source {name!r}; choose one of {EMBEDDED}")
    write_fasta(records, out_fasta)
    return len(records)


GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def local_path(spec: Mapping[str, Any]) -> Path:
    """The file of a ``fasta`` source as the workflow reads it (``~`` expanded; relative stays relative to
    the working directory)."""
    return Path(os.path.expanduser(str(spec["path"])))


def check_local_sources(sources: Mapping[str, Mapping[str, Any]], workdir: str | Path = ".") -> None:
    """Every ``fasta`` source's file exists; ``ValueError`` naming the config key, the path and where a
    relative path was looked for."""
    problems = []
    for name, spec in sources.items():
        if spec.get("kind") != "fasta":
            continue
        path = local_path(spec)
        full = path if path.is_absolute() else Path(workdir).resolve() / path
        if not full.is_file():
            where = (
                ""
                if path.is_absolute()
                else f" (a relative path resolves against the working directory {Path(workdir).resolve()})"
            )
            what = "is a directory" if full.is_dir() else "does not exist"
            problems.append(
                f"sources.{name}.path: {str(spec['path'])!r} {what}{where}; give the FASTA file's path"
            )
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))


def _first_text_byte(head: bytes, gzipped: bool) -> bytes:
    """The first non-whitespace byte of the FASTA content (decompressed when ``gzipped``), b"" if none."""
    if gzipped:
        head = zlib.decompressobj(wbits=31).decompress(head, 1 << 16)
    stripped = head.lstrip()
    return stripped[:1]


def copy_local_fasta(
    source: str | Path,
    out_fasta: str | Path,
    manifest: str | Path,
    *,
    key: str,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Copy a local FASTA byte for byte to ``out_fasta`` while hashing it, then write ``manifest`` (JSON:
    path, bytes, sha256, whether it was given and checked, gzip). The copy is committed only once the
    checksum matches (atomic rename); a file that does not start like FASTA (``>`` after any leading
    whitespace, after gunzipping) fails naming ``key``. Returns the manifest."""
    source = Path(source)
    with open(source, "rb") as handle:
        head = handle.read(1 << 16)
    gzipped = head[:2] == GZIP_MAGIC
    try:
        first = _first_text_byte(head, gzipped)
    except zlib.error as err:
        raise ValueError(f"{key}: {source} starts like gzip but does not decompress ({err})") from None
    if first != b">":
        raise ValueError(
            f"{key}: {source} is not FASTA: its content starts with {first!r}, not a '>' header line "
            "(plain or gzipped FASTA are accepted)"
        )
    digest, size = hashlib.sha256(), 0
    with atomic_path(out_fasta) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        observed = digest.hexdigest()
        if sha256 is not None and observed != sha256.lower():
            raise ValueError(
                f"{key}: checksum mismatch for {source}: sha256 {observed}, the config says "
                f"{sha256.lower()}; fix the file or the config's sha256 (or omit it: the file's is recorded)"
            )
    info = {
        "source": key,
        "path": str(source.resolve()),
        "bytes": size,
        "sha256": observed,
        "sha256_checked": sha256 is not None,
        "gzip": gzipped,
    }
    write_json_atomic(manifest, info)
    return info
