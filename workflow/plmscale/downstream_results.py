"""The downstream stage's typed result (:class:`FinetuneResult`) and its tables: one row per classifier
(``results.csv``, the figure's input) and one row per data-set split (``datasets.csv``: counts found vs
published, leakage against pre-training clusters)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import polars as pl

from plmscale.atomic import atomic_path
from plmscale.downstream_specs import FinetuneSettings, ModelSpec
from plmscale.typed import check_keys


@dataclass(frozen=True)
class FinetuneResult:
    """One (model, dataset, method) evaluation: what ``results/downstream/{dataset}/{method}/{model}.json``
    holds."""

    model: ModelSpec
    dataset: str
    method: str
    n_classes: int
    n_train: int
    n_valid: int
    n_test: int
    metrics: dict[str, Any]
    history: tuple[dict[str, float], ...]
    settings: FinetuneSettings
    device: str
    precision: str
    world_size: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["model"] = self.model.to_dict()
        data["settings"] = self.settings.to_dict()
        data["history"] = list(self.history)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneResult:
        check_keys(cls, data, "finetune result")
        values = dict(data)
        values["model"] = ModelSpec.from_dict(data["model"])
        values["settings"] = FinetuneSettings.from_dict(data["settings"])
        values["history"] = tuple(data["history"])
        return cls(**values)


METRICS = (
    "test_accuracy",
    "test_accuracy_lo",
    "test_accuracy_hi",
    "test_mcc",
    "test_mcc_lo",
    "test_mcc_hi",
    "majority_accuracy",
)


def result_row(result: FinetuneResult) -> dict[str, Any]:
    m = result.model
    return {
        "model": m.name,
        "kind": m.kind,
        "objective": m.objective,
        "dataset": result.dataset,
        "method": result.method,
        "pretrain_flops": m.pretrain_flops,
        "n_params": m.n_params,
        **{k: float(result.metrics[k]) for k in METRICS},
        "best_epoch": int(result.metrics["best_epoch"]),
        "epochs_run": int(result.metrics["epochs_run"]),
        "valid_accuracy_best": float(result.metrics["valid_accuracy_best"]),
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "n_test": result.n_test,
        "device": result.device,
        "precision": result.precision,
        "world_size": result.world_size,
        "wall_s": result.wall_s,
    }


def _write_csv(frame: pl.DataFrame, output: str | Path) -> None:
    with atomic_path(output) as tmp:
        frame.write_csv(tmp)


def results_table(result_jsons: Sequence[str | Path], output: str | Path) -> pl.DataFrame:
    rows = [result_row(FinetuneResult.from_dict(json.loads(Path(p).read_text()))) for p in result_jsons]
    schema_overrides = {"pretrain_flops": pl.Float64, "n_params": pl.Int64}
    table = pl.DataFrame(rows, schema_overrides=schema_overrides, infer_schema_length=None).sort(
        ["dataset", "method", "kind", "pretrain_flops", "model"], nulls_last=True
    )
    _write_csv(table, output)
    return table


def datasets_table(
    reports: Sequence[str | Path], leakage: Sequence[str | Path], output: str | Path
) -> pl.DataFrame:
    """Per (data set, split): proteins found, the published count, whether they match, and the proteins
    in a pre-training cluster (null where no leakage report was made, e.g. the proxy task)."""
    leaks = {}
    for path in leakage:
        name = Path(path).name.removesuffix(".leakage.json")
        leaks[name] = json.loads(Path(path).read_text())
    rows = []
    for path in reports:
        name = Path(path).name.removesuffix(".report.json")
        report = json.loads(Path(path).read_text())
        for split, entry in report["splits"].items():
            leak = leaks.get(name, {}).get("splits", {}).get(split, {})
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "n_found": entry["n_found"],
                    "n_expected": entry.get("n_expected"),
                    "count_matches": entry.get("count_matches"),
                    "n_classes_present": sum(1 for v in entry["class_counts"].values() if v),
                    "whitespace_stripped": entry.get("whitespace_stripped"),
                    "n_leaked": leak.get("n_leaked"),
                    "fraction_leaked": leak.get("fraction_leaked"),
                }
            )
    table = pl.DataFrame(rows, infer_schema_length=None)
    _write_csv(table, output)
    return table
