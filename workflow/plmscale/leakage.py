"""Leakage of a downstream data set into pre-training: evaluation proteins clustered with pre-training ones.

An evaluation protein is *leaked* when MMseqs2, with the study's clustering (``cluster`` settings: method,
minimum sequence identity, coverage and coverage mode), puts it in the same cluster as at least one
pre-training protein.  This is the same linclust (or cluster) run as the cluster stage
(:func:`plmscale.mmseqs.cluster_commands`) on the pre-training pool plus the evaluation proteins, so at
paper scale it costs one more clustering of the whole pool (time, memory and scratch disk as that stage).

The pooled FASTA has the pre-training records first, under ``pt|<their id>``, then the evaluation proteins
under ``ev|<split>|<row>`` (row index in the split's file: unique, and free of whitespace whatever the
data set's ids are; the report maps it back to the id).  MMseqs2 keeps such a header's first word as is
(the ``sp|``-style parsing applies only to known database prefixes).  ``clu.tsv`` is read with polars'
lazy engine and never held whole: the clusters of the (few) evaluation proteins are collected first, then
the pre-training members of only those clusters.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from plmscale.atomic import write_json_atomic
from plmscale.fasta import read_fasta, write_fasta
from plmscale.locdata import SPLITS
from plmscale.mmseqs import ClusterSettings, _run, cluster_commands, find_mmseqs

__all__ = ["leakage_report"]

PRETRAIN = "pt|"
EVAL = "ev|"
Log = Callable[[str], object]


def _pooled_records(
    pretrain_fastas: Sequence[str | os.PathLike[str]], table: pl.DataFrame, tally: dict[str, int]
) -> Iterator[tuple[str, str]]:
    """Pre-training records (streamed; empty ones skipped and counted), then the evaluation proteins."""
    for path in pretrain_fastas:
        for record in read_fasta(path):
            if record.sequence:
                tally["n_pretrain"] += 1
                yield PRETRAIN + record.id, record.sequence
            else:
                tally["empty_pretrain_skipped"] += 1
    for split, row, sequence in table.select("split", "row", "sequence").iter_rows():
        yield f"{EVAL}{split}|{row}", sequence


def _leaked(tsv: Path) -> pl.DataFrame:
    """One row per evaluation protein whose cluster holds a pre-training protein: ``split``, ``row``,
    ``pretrain_member`` (the first pre-training member of its cluster, by name)."""
    clusters = pl.scan_csv(
        tsv, separator="\t", has_header=False, quote_char=None,
        schema={"representative": pl.String, "member": pl.String},
    )  # fmt: skip
    evaluation = (
        clusters.filter(pl.col("member").str.starts_with(EVAL)).collect(engine="streaming").lazy()
    )  # one row per evaluation protein: small
    pretrain = (
        clusters.filter(pl.col("member").str.starts_with(PRETRAIN))
        .join(evaluation.select("representative").unique(), on="representative", how="semi")
        .group_by("representative")
        .agg(pl.col("member").min().alias("pretrain_member"))
        .collect(engine="streaming")
        .lazy()
    )
    parts = pl.col("member").str.split_exact("|", 2)
    return (
        evaluation.join(pretrain, on="representative", how="inner")
        .select(
            parts.struct.field("field_1").alias("split"),
            parts.struct.field("field_2").cast(pl.Int64).alias("row"),
            pl.col("pretrain_member").str.strip_prefix(PRETRAIN),
        )
        .collect()
    )


def leakage_report(
    dataset_parquet: str | os.PathLike[str],
    pretrain_fastas: Sequence[str | os.PathLike[str]],
    output_json: str | os.PathLike[str],
    *,
    mmseqs: str | None,
    settings: ClusterSettings,
    examples: int = 20,
    log: Log = print,
) -> dict[str, Any]:
    """Count, per split of a converted data set (:func:`plmscale.locconvert.convert_dataset`), the proteins in
    an MMseqs2 cluster that holds a pre-training protein; write and return the JSON report.

    ``mmseqs`` is the configured binary (None/"auto": found as :func:`plmscale.mmseqs.find_mmseqs` does);
    ``settings`` the study's clustering (``cluster`` config); MMseqs2's files live in a temporary directory
    under ``settings.scratch`` (else the system's), removed afterwards.  Note that this is the same linclust
    as the cluster stage: at paper scale it costs one more clustering of the pool.  The report: settings,
    mmseqs version, ``n_pretrain``, per split ``n``, ``n_leaked``, ``fraction_leaked``, and up to
    ``examples`` examples (split, row, id, a pre-training member of its cluster), in split and row order.
    """
    table = pl.read_parquet(dataset_parquet, columns=["split", "row", "id", "sequence"])
    unknown = sorted(set(table["split"].unique().to_list()) - set(SPLITS))
    if unknown:
        raise ValueError(f"{dataset_parquet}: splits {unknown} are not among {list(SPLITS)}")
    binary = find_mmseqs(mmseqs)
    log(f"mmseqs: {binary.path} (from {binary.origin}), version {binary.version}")
    scratch = settings.scratch
    if scratch:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    tally = {"n_pretrain": 0, "empty_pretrain_skipped": 0}
    with tempfile.TemporaryDirectory(prefix="plmscale-leakage-", dir=scratch) as tmp:
        work = Path(tmp)
        pooled = work / "pooled.fasta"
        write_fasta(_pooled_records(pretrain_fastas, table, tally), pooled, width=1 << 30)
        if tally["n_pretrain"] == 0:
            raise ValueError(f"no pre-training sequences in {[str(p) for p in pretrain_fastas]}")
        commands = cluster_commands(binary.path, pooled, work, settings)
        for cmd in commands:
            _run(cmd, log)
        leaked = _leaked(work / "clu.tsv")
    leaked = leaked.join(table.select("split", "row", "id"), on=["split", "row"], how="left")
    order = {split: i for i, split in enumerate(SPLITS)}
    leaked = leaked.sort(pl.col("split").replace_strict(order, return_dtype=pl.Int8), "row")
    sizes = dict(table.group_by("split").len().iter_rows())
    n_leaked = dict(leaked.group_by("split").len().iter_rows())
    splits = {}
    for split in SPLITS:
        n = int(sizes.get(split, 0))
        k = int(n_leaked.get(split, 0))
        splits[split] = {"n": n, "n_leaked": k, "fraction_leaked": k / n if n else None}
    total = sum(s["n"] for s in splits.values())
    total_leaked = sum(s["n_leaked"] for s in splits.values())
    report = {
        "dataset": str(dataset_parquet),
        "pretrain_fastas": [str(p) for p in pretrain_fastas],
        "settings": dataclasses.asdict(settings),
        "mmseqs_path": binary.path,
        "mmseqs_origin": binary.origin,
        "mmseqs_version": binary.version,
        "commands": commands,
        **tally,
        "splits": splits,
        "n": total,
        "n_leaked": total_leaked,
        "fraction_leaked": total_leaked / total if total else None,
        "examples": [
            {"split": s, "row": r, "id": i, "pretrain_member": m}
            for s, r, i, m in leaked.head(examples)
            .select("split", "row", "id", "pretrain_member")
            .iter_rows()
        ],
    }
    for split, info in splits.items():
        log(f"leakage {split}: {info['n_leaked']} of {info['n']} proteins share a cluster with pre-training")
    write_json_atomic(output_json, report)
    return report
