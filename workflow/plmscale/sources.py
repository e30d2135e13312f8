"""Embedded protein sources: real proteins materialised from files shipped inside installed wheels.

- ``pyhmmer_proteome`` ("curated"): the annotated proteome shipped with pyhmmer's tests
  (``938293.PRJEB85.HG003687.faa``, 2,100 proteins).
- ``pyrodigal_metagenome`` ("metagenomic"): genes called by Prodigal in metagenomic mode (pyrodigal) on
  the genome and contigs shipped with pyrodigal's tests: a *Corynebacterium diphtheriae* genome, an
  *E. coli* contig and a metagenome assembly.  Translated with the bacterial code; a terminal ``*`` is
  kept so the validation stage's policy decides what to do with it.

Nothing is downloaded: both come from ``importlib.resources`` of the installed packages.
"""

from __future__ import annotations

import gzip
import importlib.resources
from collections.abc import Iterator
from pathlib import Path

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
