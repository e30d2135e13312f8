"""The ``downstream`` and ``hwbench`` config sections, validated once into frozen dataclasses.

Which models are evaluated (the study's runs of ``downstream.objectives`` and the external checkpoints of
``downstream.models``), on which data sets (``kind: table``, downloaded; ``kind: proxy``, the embedded
sample's computed labels), by which methods (``frozen``, ``full``), and what the hardware benchmark runs.
Errors are ``ValueError`` naming the key, the value and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plmscale.downstream_specs import METHODS, FinetuneSettings, ModelSpec, external_models
from plmscale.locdata import TableDataset

HW_DEVICES = ("cpu", "cuda", "hpu")
PROXY_CLASSES = ("soluble", "membrane")  # label ids 0 and 1 of the proxy task


@dataclass(frozen=True)
class ProxyDataset:
    """The embedded sample's offline stand-in for binary localization: proteins of the study's held-out
    splits labelled by Kyte-Doolittle hydropathy (computed, not curated; see plmscale.downstream)."""

    name: str
    window: int = 19
    threshold: float = 1.6
    max_proteins: int = 600
    classes: tuple[str, ...] = PROXY_CLASSES


@dataclass(frozen=True)
class DownstreamConfig:
    enabled: bool
    objectives: tuple[str, ...]  # of downstream.objectives, those the grid trains
    skipped_objectives: tuple[str, ...]  # of downstream.objectives, those it does not (no runs to evaluate)
    methods: tuple[str, ...]
    datasets: Mapping[str, TableDataset | ProxyDataset]
    external: tuple[ModelSpec, ...]
    settings: Mapping[str, FinetuneSettings]  # per method
    lock_dir: str
    leakage: bool
    limits: Mapping[str, int | None]  # per split: the first N proteins (None = all)
    budgets: tuple[float, ...] | None = None  # the budgets (FLOPs) whose runs are evaluated; None = all

    def takes_budget(self, flops: float) -> bool:
        """Whether the study's runs at this budget get classifiers (``downstream.budgets``)."""
        return self.budgets is None or any(math.isclose(flops, b, rel_tol=1e-9) for b in self.budgets)

    def n_classes(self, dataset: str) -> int:
        return len(self.datasets[dataset].classes)

    def table_datasets(self) -> list[str]:
        return [n for n, d in self.datasets.items() if isinstance(d, TableDataset)]

    def proxy_datasets(self) -> list[str]:
        return [n for n, d in self.datasets.items() if isinstance(d, ProxyDataset)]


@dataclass(frozen=True)
class HwbenchConfig:
    enabled: bool
    model: str
    dataset: str
    devices: tuple[str, ...]
    device_counts: tuple[int, ...]
    precision: str
    max_length: int
    paddings: tuple[str, ...]
    finetune_padding: str
    warmup: int
    max_sequences: int | None
    max_samples: int | None
    epochs: int
    method: str
    batch_size: int
    launcher: str
    compile: bool
    hpu_graphs: bool
    reference_device: str | None


def own_model_name(objective: str, budget: str, shape: str) -> str:
    """The downstream name of a run of the study: ``mlm_3e11_t105k``."""
    return f"{objective}_{budget}_{shape}"


def parse_downstream(
    section: Mapping[str, Any], study_objectives: Sequence[str], study_budgets: Sequence[float] = ()
) -> DownstreamConfig:
    s = dict(section)
    budgets = _budgets(s.get("budgets"), study_budgets)
    asked = tuple(s.get("objectives", ["mlm"]))
    objectives = tuple(o for o in asked if o in study_objectives)
    skipped = tuple(o for o in asked if o not in study_objectives)  # announced by the workflow
    methods = tuple(s.get("methods", ["frozen"]))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"downstream.methods {list(methods)}: each must be one of {list(METHODS)}")
    datasets: dict[str, TableDataset | ProxyDataset] = {}
    for name, entry in (s.get("datasets") or {}).items():
        entry = dict(entry)
        kind = entry.pop("kind", "table")
        if kind == "proxy":
            datasets[name] = ProxyDataset(name=name, **entry)
        elif kind == "table":
            datasets[name] = TableDataset.from_config(name, entry)
        else:
            raise ValueError(f"downstream.datasets.{name}.kind {kind!r} is not 'table' or 'proxy'")
    external = tuple(external_models(s.get("models")))
    lr = s.get("lr", {})
    settings = {
        method: FinetuneSettings(
            method=method,
            lr=float(lr.get(method, 5e-5)),
            batch_size=int(s.get("batch_size", 32)),
            max_epochs=int(s.get("max_epochs", 100)),
            patience=int(s.get("patience", 10)),
            max_length=int(s.get("max_length", 1024)),
            weight_decay=float(s.get("weight_decay", 0.0)),
            seed=int(s.get("seed", 0)),
            n_bootstrap=int(s.get("n_bootstrap", 1000)),
        )
        for method in methods
    }
    limits = {split: (s.get("max_proteins") or {}).get(split) for split in ("train", "valid", "test")}
    return DownstreamConfig(
        enabled=bool(s.get("enabled", True)),
        objectives=objectives,
        skipped_objectives=skipped,
        methods=methods,
        datasets=datasets,
        external=external,
        settings=settings,
        lock_dir=str(s.get("lock_dir", "config/locks")),
        leakage=bool(s.get("leakage", True)),
        limits=limits,
        budgets=budgets,
    )


def _budgets(asked: Sequence[float] | None, study_budgets: Sequence[float]) -> tuple[float, ...] | None:
    """``downstream.budgets``: None (every budget's runs) or budgets of ``grid.budgets``."""
    if asked is None:
        return None
    budgets = tuple(float(b) for b in asked)
    unknown = [f"{b:g}" for b in budgets if not any(math.isclose(b, g, rel_tol=1e-9) for g in study_budgets)]
    if unknown or not budgets:
        grid = ", ".join(f"{g:g}" for g in sorted(study_budgets))
        problem = f"{', '.join(unknown)} not in grid.budgets" if unknown else "an empty list"
        raise ValueError(
            f"downstream.budgets: {problem}; list budgets of grid.budgets ({grid}), or null for every budget"
        )
    return budgets


def parse_hwbench(
    section: Mapping[str, Any] | None, downstream: DownstreamConfig, own_models: Sequence[str]
) -> HwbenchConfig:
    s = dict(section or {})
    enabled = bool(s.get("enabled", False))
    cfg = HwbenchConfig(
        enabled=enabled,
        model=str(s.get("model", "")),
        dataset=str(s.get("dataset", "")),
        devices=tuple(s.get("devices", ["cpu"])),
        device_counts=tuple(int(n) for n in s.get("device_counts", [1])),
        precision=str(s.get("precision", "bf16")),
        max_length=int(s.get("max_length", 1024)),
        paddings=tuple(s.get("paddings", ["max_length", "none"])),
        warmup=int(s.get("warmup", 8)),
        finetune_padding=str(s.get("finetune_padding", "max_length")),
        max_sequences=s.get("max_sequences"),
        max_samples=s.get("max_samples"),
        epochs=int(s.get("epochs", 2)),
        method=str(s.get("method", "frozen")),
        batch_size=int(s.get("batch_size", 32)),
        launcher=str(s.get("launcher", "torchrun --standalone --nproc_per_node={devices}")),
        compile=bool(s.get("compile", False)),
        hpu_graphs=bool(s.get("hpu_graphs", False)),
        reference_device=s.get("reference_device"),
    )
    if not enabled:
        return cfg
    bad = [d for d in cfg.devices if d not in HW_DEVICES]
    if bad or not cfg.devices:
        raise ValueError(f"hwbench.devices {list(cfg.devices)}: each must be one of {list(HW_DEVICES)}")
    if any(n < 1 for n in cfg.device_counts) or not cfg.device_counts:
        raise ValueError(
            f"hwbench.device_counts {list(cfg.device_counts)} must be positive integers, e.g. [1, 2, 4, 8]"
        )
    if cfg.dataset not in downstream.datasets:
        raise ValueError(
            f"hwbench.dataset {cfg.dataset!r} is not one of downstream.datasets {sorted(downstream.datasets)}"
        )
    models = sorted(set(own_models) | {m.name for m in downstream.external})
    if cfg.model not in models:
        raise ValueError(f"hwbench.model {cfg.model!r} is not a downstream model; choose one of {models}")
    if "frozen" not in downstream.methods:
        raise ValueError(
            "hwbench needs the frozen-backbone classifier of the downstream stage for its inference "
            "accuracy: add 'frozen' to downstream.methods"
        )
    if cfg.method not in METHODS:
        raise ValueError(f"hwbench.method {cfg.method!r} is not one of {list(METHODS)}")
    if cfg.reference_device is not None and cfg.reference_device not in cfg.devices:
        raise ValueError(f"hwbench.reference_device {cfg.reference_device!r} is not in hwbench.devices")
    if "{devices}" not in cfg.launcher:
        raise ValueError(
            f"hwbench.launcher {cfg.launcher!r} has no {{devices}} placeholder; it must start that many "
            "processes (e.g. 'torchrun --standalone --nproc_per_node={devices}')"
        )
    return cfg


def hwbench_settings(cfg: HwbenchConfig, seed: int) -> FinetuneSettings:
    """The fine-tuning benchmark's settings: the blog's batch and padding, the backbone run in every step."""
    return FinetuneSettings(
        method=cfg.method,
        batch_size=cfg.batch_size,
        max_epochs=cfg.epochs,
        patience=cfg.epochs,
        max_length=cfg.max_length,
        seed=seed,
        cache_features=False,
        pad_to_max_length=cfg.finetune_padding == "max_length",
    )
