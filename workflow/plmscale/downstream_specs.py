"""The downstream stage's plain settings, without torch: which models are compared (:class:`ModelSpec`)
and how a classifier is trained (:class:`FinetuneSettings`).

They live apart from :mod:`plmscale.backbones` and :mod:`plmscale.finetune` (which re-export them) so that
the workflow can parse its config and build its DAG without importing torch (about 1.2 s per Snakemake
start on a laptop).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plmscale.typed import check_keys

METHODS = ("frozen", "full")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the downstream comparison.

    ``kind`` "own" (a run of this study: ``objective``, ``pretrain_flops`` = its budget C = 6ND,
    ``n_params`` = non-embedding N) or "external" (``pretrain_flops`` / ``n_params`` as the user states
    them in ``downstream.models``; unknown = None, and the model is then not placed on the compute axis).
    """

    name: str
    kind: str
    path: str
    objective: str = ""
    pretrain_flops: float | None = None
    n_params: int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(
                f"downstream model name {self.name!r} must match {NAME_PATTERN.pattern} (it becomes a file "
                "name); rename it in downstream.models"
            )
        if self.kind not in ("own", "external"):
            raise ValueError(f"model {self.name}: kind {self.kind!r} is not 'own' or 'external'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        check_keys(cls, data, "model spec", partial=True)
        return cls(**dict(data))


def external_models(models: Mapping[str, Any] | None) -> list[ModelSpec]:
    """``downstream.models`` of the config: ``{name: path}`` or ``{name: {path, pretrain_flops, n_params,
    tokenizer}}`` -> specs (order kept)."""
    out = []
    for name, value in (models or {}).items():
        entry = {"path": value} if isinstance(value, str) else dict(value)
        if "path" not in entry:
            raise ValueError(f"downstream.models.{name} has no path; give the checkpoint directory")
        flops = entry.get("pretrain_flops")
        n_params = entry.get("n_params")
        out.append(
            ModelSpec(
                name=str(name),
                kind="external",
                path=str(entry["path"]),
                pretrain_flops=None if flops is None else float(flops),
                n_params=None if n_params is None else int(n_params),
                tokenizer=entry.get("tokenizer"),
            )
        )
    return out


def check_checkpoint_dir(spec: ModelSpec) -> Path:
    """The checkpoint directory of an external model, or a ValueError naming the key and what is missing."""
    path = Path(spec.path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"downstream.models.{spec.name}: {path} has no config.json; give the directory of a Hugging Face "
            "checkpoint saved with save_pretrained (download it once, e.g. "
            f"`hf download facebook/esm2_t6_8M_UR50D --local-dir {path}`)"
        )
    return path


@dataclass(frozen=True)
class FinetuneSettings:
    """How a classifier is trained (config ``downstream``; defaults are the blog's recipe)."""

    method: str = "frozen"
    lr: float = 5e-5
    batch_size: int = 32  # per process
    max_epochs: int = 100
    patience: int = 10  # epochs without a better validation accuracy before stopping
    max_length: int = 1024  # tokens incl. <cls>/<eos>; longer proteins are truncated
    weight_decay: float = 0.0
    seed: int = 0
    n_bootstrap: int = 1000
    cache_features: bool = True  # frozen only: embed once (exact, see the module docstring)
    pad_to_max_length: bool = (
        False  # pad every batch to max_length (the blog's script) instead of its longest
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"downstream method {self.method!r} is not one of {METHODS}")
        for key in ("batch_size", "max_epochs", "patience", "n_bootstrap"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"downstream.{key} = {getattr(self, key)} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneSettings:
        check_keys(cls, data, "finetune settings", partial=True)
        return cls(**dict(data))
