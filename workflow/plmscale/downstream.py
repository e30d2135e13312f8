"""Downstream evaluation (thin): membrane-bound vs soluble, a linear probe on frozen MLM encoders.

This mirrors the binary-localization task of the ProtST/PEER benchmark with *computed proxy labels*:
a protein is labelled membrane-bound when some window of 19 residues has a mean Kyte-Doolittle
hydropathy above 1.6, the transmembrane-helix criterion of Kyte & Doolittle (1982, J. Mol. Biol.
157:105).  The full-scale config uses the published DeepLoc labels instead.

Probe: mean-pooled last hidden states of the frozen encoder (first ``context`` tokens of each protein),
standardised, then L2-regularised logistic regression fitted with L-BFGS on the proteins of the
validation split and scored on the test split (both held out from pre-training, cluster-disjoint).

The encoder runs on the device the job reserved (``device``: auto|cpu|cuda|hpu, ``plmscale.devices``; an
absent device fails before any work) in ``precision`` fp32 or bf16 (autocast); the pooled embeddings come
back to the CPU as float64 and the probe is fitted there.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from plmscale.atomic import write_json_atomic
from plmscale.devices import autocast, check_precision, describe_device, resolve_device, step_marker
from plmscale.fasta import read_fasta
from plmscale.model import POSITION_OFFSET
from plmscale.tokens import encode

# Kyte & Doolittle (1982) hydropathy; ambiguity codes take the mean of what they stand for
# (B = D/N, Z = E/Q), U (selenocysteine) takes C, O (pyrrolysine) takes K, X takes 0.
KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2,
    "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9,
    "Y": -1.3, "V": 4.2, "B": -3.5, "Z": -3.5, "U": 2.5, "O": -3.9, "X": 0.0,
}  # fmt: skip
_KD_LUT = np.zeros(256, dtype=np.float64)
for _aa, _value in KYTE_DOOLITTLE.items():
    _KD_LUT[ord(_aa)] = _value


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


def label_proteins(
    valid_fastas: Sequence[str],
    test_fastas: Sequence[str],
    output: str,
    *,
    window: int,
    threshold: float,
    max_proteins: int,
) -> pl.DataFrame:
    """The probe's data set: the first ``max_proteins`` proteins of the validation split (probe training)
    and of the test split (probe evaluation), each split's files read in the order given, with their proxy
    label."""
    rows = []
    for split, paths in (("probe_train", valid_fastas), ("probe_test", test_fastas)):
        records = itertools.chain.from_iterable(read_fasta(path) for path in paths)
        for record in itertools.islice(records, max_proteins):
            score = max_window_hydropathy(record.sequence, window)
            rows.append(
                {
                    "id": record.id,
                    "split": split,
                    "length": len(record.sequence),
                    "max_window_hydropathy": round(score, 4),
                    "label": "membrane" if score > threshold else "soluble",
                    "sequence": record.sequence,
                }
            )
    table = pl.DataFrame(rows)
    for split in ("probe_train", "probe_test"):
        labels = set(table.filter(pl.col("split") == split)["label"])
        if len(labels) < 2:
            raise ValueError(
                f"the {split} proteins all have label {labels}; a probe needs both classes: use more "
                "proteins (downstream.max_proteins) or check downstream.threshold"
            )
    tmp = Path(output).with_name(f".{Path(output).name}.tmp")
    table.write_csv(tmp, separator="\t")
    tmp.replace(output)
    return table


@torch.no_grad()
def embed(
    model: torch.nn.Module,
    sequences: list[str],
    context: int,
    batch_size: int = 32,
    *,
    precision: str = "fp32",
) -> np.ndarray:
    """Mean of the encoder's last hidden states over the residues in the first ``context`` tokens.

    Runs where the model's parameters are, under ``autocast(device, precision)``; each batch is moved
    there and its pooled vectors come back to the CPU (float64)."""
    ids, offsets = encode(sequences)
    model.eval()
    backbone = model.base_model
    device = next(model.parameters()).device
    mark_step = step_marker(device)  # Gaudi lazy mode: flush the graph after each forward
    out = []
    for first in range(0, len(sequences), batch_size):
        chunk = range(first, min(first + batch_size, len(sequences)))
        rows = [ids[offsets[i] : offsets[i + 1]][:context].astype(np.int64) for i in chunk]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), 1, dtype=torch.long)
        keep = torch.zeros((len(rows), width), dtype=torch.bool)
        for j, row in enumerate(rows):
            input_ids[j, : len(row)] = torch.from_numpy(row)
            keep[j, 1 : len(row) - (1 if row[-1] == 2 else 0)] = True  # residues only, not <cls>/<eos>
        attention = (input_ids != 1).long()
        positions = (torch.arange(width) + POSITION_OFFSET).expand(len(rows), -1)
        with autocast(device, precision):
            hidden = backbone(
                input_ids=input_ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device),
            ).last_hidden_state  # fmt: skip
        weights = keep.to(device).unsqueeze(-1).float()
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
        mark_step()
        out.append(pooled.cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 500) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (mean log-loss + l2 |w|^2) by L-BFGS; returns (w, b)."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and Matthews correlation of binary predictions."""
    tp = float(np.sum((y_true == 1) & (y_pred == 1)))
    tn = float(np.sum((y_true == 0) & (y_pred == 0)))
    fp = float(np.sum((y_true == 0) & (y_pred == 1)))
    fn = float(np.sum((y_true == 1) & (y_pred == 0)))
    n = tp + tn + fp + fn
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    recall_pos = tp / (tp + fn) if tp + fn else 0.0
    recall_neg = tn / (tn + fp) if tn + fp else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "balanced_accuracy": 0.5 * (recall_pos + recall_neg),
        "mcc": (tp * tn - fp * fn) / denom if denom else 0.0,
    }


def probe_run(
    model_dir: str,
    labels_tsv: str,
    output: str,
    *,
    context: int,
    l2: float,
    seed: int,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Embed the probe proteins with a frozen MLM encoder, fit the probe, write its test metrics."""
    from plmscale.evaluate import load_model

    torch.set_num_threads(threads)
    dev = resolve_device(device)  # before any work: a missing GPU/Gaudi fails here
    check_precision(dev, precision)
    torch.manual_seed(seed)
    table = pl.read_csv(labels_tsv, separator="\t")
    model = load_model(model_dir, "mlm").to(dev)
    train = table.filter(pl.col("split") == "probe_train")
    test = table.filter(pl.col("split") == "probe_test")
    x_train = embed(model, train["sequence"].to_list(), context, precision=precision)
    x_test = embed(model, test["sequence"].to_list(), context, precision=precision)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train = (train["label"] == "membrane").to_numpy().astype(int)
    y_test = (test["label"] == "membrane").to_numpy().astype(int)
    w, b = fit_logistic(x_train, y_train, l2)
    pred = ((x_test @ w + b) > 0).astype(int)
    majority = int(y_train.mean() >= 0.5)
    result = {
        "model": str(model_dir),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "membrane_fraction_test": float(y_test.mean()),
        **{f"test_{k}": v for k, v in binary_metrics(y_test, pred).items()},
        "majority_baseline_accuracy": float(np.mean(y_test == majority)),
        "labels": "computed proxy: Kyte-Doolittle max window mean > threshold (not curated annotations)",
        "embed_precision": precision,
        "embed_device": describe_device(dev),
    }
    write_json_atomic(output, result)
    print(json.dumps(result))
    return result
