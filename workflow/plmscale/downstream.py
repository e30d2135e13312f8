"""The embedded sample's offline downstream task: membrane-bound vs soluble with *computed proxy labels*.

It stands in for ProtST's binary localization where no labelled set can be downloaded (the embedded
default runs offline): a protein is labelled membrane-bound when some window of 19 residues has a mean
Kyte-Doolittle hydropathy above 1.6, the transmembrane-helix criterion of Kyte & Doolittle (1982, J. Mol.
Biol. 157:105).  These are not curated annotations; the full-scale config evaluates the published DeepLoc
sets (plmscale.locdata).  The proteins come from the study's held-out clusters (validation split -> the
task's train and valid splits, test split -> its test split), so none shares a cluster with pre-training.

The output has the schema of a converted data set (:func:`plmscale.locconvert.convert_dataset`), so the
same fine-tuning and evaluation rules run on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.fasta import read_fasta

# Kyte & Doolittle (1982) hydropathy; ambiguity codes take the mean of what they stand for
# (B = D/N, Z = E/Q), U (selenocysteine) takes C, O (pyrrolysine) takes K, X takes 0.
KYTE_DOOLITTLE = {
    "A": 1.8,
    "R": -4.5,
    "N": -3.5,
    "D": -3.5,
    "C": 2.5,
    "Q": -3.5,
    "E": -3.5,
    "G": -0.4,
    "H": -3.2,
    "I": 4.5,
    "L": 3.8,
    "K": -3.9,
    "M": 1.9,
    "F": 2.8,
    "P": -1.6,
    "S": -0.8,
    "T": -0.7,
    "W": -0.9,
    "Y": -1.3,
    "V": 4.2,
    "B": -3.5,
    "Z": -3.5,
    "U": 2.5,
    "O": -3.9,
    "X": 0.0,
}
_KD_LUT = np.zeros(256, dtype=np.float64)
for _aa, _value in KYTE_DOOLITTLE.items():
    _KD_LUT[ord(_aa)] = _value
CLASSES = ("soluble", "membrane")


def max_window_hydropathy(sequence: str, window: int) -> float:
    """Largest mean Kyte-Doolittle hydropathy over windows of ``window`` residues (whole sequence if
    shorter)."""
    values = _KD_LUT[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]
    if len(values) == 0:
        raise ValueError("empty sequence has no hydropathy")
    if len(values) <= window:
        return float(values.mean())
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return float(((csum[window:] - csum[:-window]) / window).max())


def proxy_dataset(
    valid_fastas: Sequence[str],
    test_fastas: Sequence[str],
    output_parquet: str,
    report_json: str,
    *,
    window: int,
    threshold: float,
    max_proteins: int,
) -> dict[str, Any]:
    """Label the first proteins of the study's validation split (task train: up to ``max_proteins``; task
    valid: a third of those taken, up to ``max_proteins // 2``) and of its test split (task test: up to
    ``max_proteins``); write the Parquet and a report; return the report."""
    valid_records = itertools.chain.from_iterable(read_fasta(p) for p in valid_fastas)
    test_records = itertools.chain.from_iterable(read_fasta(p) for p in test_fastas)
    # the task's train and valid splits share the study's validation proteins 2:1, at most max_proteins + half
    held_out = list(itertools.islice(valid_records, max_proteins + max_proteins // 2))
    n_valid = max(2, len(held_out) // 3)
    take = {"train": iter(held_out[:-n_valid]), "valid": iter(held_out[-n_valid:])}
    take["test"] = itertools.islice(test_records, max_proteins)
    frames, report = (
        [],
        {"dataset": "proxy", "classes": list(CLASSES), "labels": "computed proxy", "splits": {}},
    )
    for split, records in take.items():
        rows = [(r.id, r.sequence) for r in records]
        scores = [max_window_hydropathy(seq, window) for _, seq in rows]
        label_id = [int(score > threshold) for score in scores]
        frame = pl.DataFrame(
            {
                "split": [split] * len(rows),
                "row": np.arange(len(rows), dtype=np.int64),
                "id": [i for i, _ in rows],
                "sequence": [seq for _, seq in rows],
                "length": np.asarray([len(seq) for _, seq in rows], dtype=np.int32),
                "label_id": np.asarray(label_id, dtype=np.int16),
                "label": [CLASSES[k] for k in label_id],
                "max_window_hydropathy": np.round(scores, 4),
            }
        )
        counts = {c: int(sum(1 for k in label_id if CLASSES[k] == c)) for c in CLASSES}
        if split in ("train", "test") and min(counts.values()) == 0:
            raise ValueError(
                f"the proxy task's {split} split has classes {counts}; training and scoring need both: use "
                "more proteins (downstream.datasets.<name>.max_proteins) or check its threshold"
            )
        report["splits"][split] = {"n_found": len(rows), "class_counts": counts}
        frames.append(frame)
    with atomic_path(output_parquet) as tmp:
        pl.concat(frames).write_parquet(tmp)
    write_json_atomic(report_json, report)
    return report
