"""Runs of the grid beyond the IsoFLOP points: transfer runs and data-repetition runs.

* ``grid.transfer``: runs of one objective initialised from the final weights of the other objective's run of
  the same shape (Cheng et al. 2024, Sec. 4: CLM -> MLM and MLM -> CLM; the optimizer is reset and the phase
  gets its own cosine schedule with a 5% warm-up). The transfer law compares each with its from-scratch
  baseline (same objective, budget and shape).
* ``grid.repetition``: runs whose training data is capped to ``D / epochs`` unique tokens, repeated
  ``epochs`` times (Muennighoff et al. 2023); the uncapped run of the same objective, budget and shape is
  the reference.

A source run, baseline or reference that the IsoFLOP grid does not hold is trained as a *support* run
(same path scheme, left out of the IsoFLOP fits): the paper's transfer sources (e.g. CLM at 5.2e18 FLOPs for
the 85M MLM run) are not on its IsoFLOP budgets.

Parsed from the schema-valid config into frozen specs; :class:`plmscale.config.Study` turns them into
:class:`plmscale.config.ScalingPoint` values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plmscale.config import ScalingPoint, Study

TRANSFER_WARMUP_FRACTION = 0.05  # Cheng et al. 2024: a fresh schedule with 5% warm-up for the second phase


@dataclass(frozen=True)
class TransferSpec:
    objective: str
    from_objective: str
    from_flops: float
    flops: float
    shapes: tuple[str, ...]
    warmup_fraction: float = TRANSFER_WARMUP_FRACTION

    def support(self, study: Study) -> list[ScalingPoint]:
        """The source runs and from-scratch baselines these transfer runs need."""
        return [
            study.make_point(objective, flops, shape)
            for shape in self.shapes
            for objective, flops in ((self.from_objective, self.from_flops), (self.objective, self.flops))
        ]

    def points(self, study: Study) -> list[ScalingPoint]:
        out = []
        for shape in self.shapes:
            source = study.make_point(self.from_objective, self.from_flops, shape)
            out.append(
                study.make_point(
                    self.objective, self.flops, shape, init_from=source.run_id, init_flops=self.from_flops,
                    warmup_fraction=self.warmup_fraction,
                )
            )  # fmt: skip
        return out


@dataclass(frozen=True)
class RepetitionSpec:
    objective: str
    flops: float
    shape: str
    epochs: tuple[float, ...]
    source: str | None = None  # one source alone, repeated (the paper's Figure 1: UR50 alone vs UniMeta)

    def support(self, study: Study) -> list[ScalingPoint]:
        """The uncapped reference run."""
        return [study.make_point(self.objective, self.flops, self.shape)]

    def points(self, study: Study) -> list[ScalingPoint]:
        return [
            study.make_point(self.objective, self.flops, self.shape, epochs=e, source=self.source)
            for e in self.epochs
        ]


def _check_shape(study: Study, where: str, shape: str) -> None:
    if shape not in study.shapes:
        raise ValueError(
            f"{where}: shape {shape!r} is not defined in grid.shapes; allowed: {sorted(study.shapes)}"
        )


def parse_transfers(entries: Sequence[Mapping[str, Any]], study: Study) -> tuple[TransferSpec, ...]:
    specs = []
    for i, entry in enumerate(entries):
        where = f"grid.transfer[{i}]"
        spec = TransferSpec(
            objective=entry["objective"],
            from_objective=entry["from"],
            from_flops=float(entry["from_flops"]),
            flops=float(entry["flops"]),
            shapes=tuple(entry["shapes"]),
            warmup_fraction=float(entry.get("warmup_fraction", TRANSFER_WARMUP_FRACTION)),
        )
        if spec.objective == spec.from_objective:
            raise ValueError(
                f"{where}: objective and from are both {spec.objective!r}; a transfer run starts from the "
                "other objective (clm -> mlm or mlm -> clm)"
            )
        for shape in spec.shapes:
            _check_shape(study, where, shape)
        specs.append(spec)
    return tuple(specs)


def parse_repetitions(
    entries: Sequence[Mapping[str, Any]], study: Study, *, sources: Sequence[str]
) -> tuple[RepetitionSpec, ...]:
    specs = []
    for i, entry in enumerate(entries):
        where = f"grid.repetition[{i}]"
        spec = RepetitionSpec(
            objective=entry["objective"],
            flops=float(entry["flops"]),
            shape=entry["shape"],
            epochs=tuple(float(e) for e in entry["epochs"]),
            source=entry.get("source"),
        )
        if spec.source is not None and spec.source not in sources:
            raise ValueError(
                f"{where}.source: {spec.source!r} is not a configured source; allowed: {list(sources)}"
            )
        _check_shape(study, where, spec.shape)
        bad = [e for e in spec.epochs if e <= 1]
        if bad:
            raise ValueError(
                f"{where}.epochs: {bad} must be > 1 (epochs = 1 is the reference IsoFLOP run itself)"
            )
        specs.append(spec)
    return tuple(specs)
