"""The study's configuration as frozen dataclasses, and the training grid it defines.

The YAML is first checked against ``config/schema.yaml`` (JSON Schema draft 2020-12: unknown keys,
types, ranges); :func:`load_study` then checks what a schema cannot (shapes that exist, heads that divide
the width, budgets that buy enough steps) and raises ``ValueError`` naming the key and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plmscale.flops import ModelShape, n_params_non_embedding, steps_for_budget, tokens_for_budget
from plmscale.split import check_fractions
from plmscale.tokens import VOCAB_SIZE
from plmscale.variants import RepetitionSpec, TransferSpec, parse_repetitions, parse_transfers

OBJECTIVES = ("clm", "mlm")
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
VARIANT_SUFFIX = re.compile(r"-(s[0-9]+|from-(clm|mlm).*|x[0-9.]+)$")


def flops_label(flops: float) -> str:
    """A compact, path-safe label of a FLOP budget: 3e+11 -> '3e11', 2.5e12 -> '2.5e12'."""
    exponent = math.floor(math.log10(flops))
    mantissa = round(flops / 10**exponent, 6)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    text = f"{mantissa:g}"
    return f"{text}e{exponent}"


@dataclass(frozen=True)
class ScalingPoint:
    """One training run of the grid: an IsoFLOP point (one of ``grid.seeds`` replicates), a transfer run
    (initialised from another run's final weights) or a repetition run (training data capped)."""

    objective: str
    flops: float  # this run's own training compute C = 6 N D (for a transfer run: its second phase only)
    shape_name: str
    shape: ModelShape
    n_params: int  # non-embedding parameters N
    num_tokens: float  # D = C / (6 N)
    num_steps: int
    replicate: int = 0  # seed = train.seed + replicate
    init_from: str | None = None  # run_id of the run whose final weights start this one (transfer)
    init_flops: float = 0.0  # training compute of that run, counted in total_flops
    warmup_fraction: float | None = None  # the transfer phase's own warm-up (None: train.warmup_fraction)
    epochs: float | None = None  # repetition: passes over the capped data (unique tokens = D / epochs)
    source: str | None = None  # repetition: train on this source alone (None: the configured mix)

    def __str__(self) -> str:
        """Readable in logs: ``mlm/1e11/t27k (isoflop): 2 layers x 32 wide, 2 heads (N=26,689), D=624,477
        tokens, 305 steps``."""
        tokens = f"D={self.num_tokens:,.0f} tokens"
        return f"{self.run_id} ({self.kind}): {self.shape}, {tokens}, {self.num_steps} steps"

    @property
    def kind(self) -> str:
        if self.init_from is not None:
            return "transfer"
        return "repetition" if self.epochs is not None else "isoflop"

    @property
    def name(self) -> str:
        """The run's path component: the shape, with a suffix for replicates, transfers and repetitions."""
        if self.init_from is not None:
            source_objective, source_budget, _ = self.init_from.split("/")
            return f"{self.shape_name}-from-{source_objective}{source_budget}"
        if self.epochs is not None:
            alone = "" if self.source is None else f"-{self.source}"
            return f"{self.shape_name}{alone}-x{self.epochs:g}"
        return self.shape_name if self.replicate == 0 else f"{self.shape_name}-s{self.replicate}"

    @property
    def total_flops(self) -> float:
        return self.flops + self.init_flops

    @property
    def unique_tokens(self) -> int | None:
        return None if self.epochs is None else int(self.num_tokens / self.epochs)

    @property
    def budget(self) -> str:
        return flops_label(self.flops)

    @property
    def run_id(self) -> str:
        return f"{self.objective}/{self.budget}/{self.name}"


@dataclass(frozen=True)
class Study:
    objectives: tuple[str, ...]
    shapes: Mapping[str, ModelShape]
    budgets: tuple[tuple[float, tuple[str, ...]], ...]
    context: int
    batch_rows: Mapping[str, int]  # per shape: train.batch_rows unless the shape sets its own
    min_steps: int
    seeds: int = 1  # replicate runs per IsoFLOP point
    transfers: tuple[TransferSpec, ...] = ()
    repetitions: tuple[RepetitionSpec, ...] = ()

    def tokens_per_step(self, shape_name: str) -> int:
        return self.context * self.batch_rows[shape_name]

    def make_point(self, objective: str, flops: float, shape_name: str, **variant: Any) -> ScalingPoint:
        shape = self.shapes[shape_name]
        n = n_params_non_embedding(shape, VOCAB_SIZE)
        return ScalingPoint(
            objective=objective,
            flops=flops,
            shape_name=shape_name,
            shape=shape,
            n_params=n,
            num_tokens=tokens_for_budget(flops, n),
            num_steps=steps_for_budget(flops, n, self.tokens_per_step(shape_name)),
            **variant,
        )

    def isoflop_points(self) -> list[ScalingPoint]:
        """The IsoFLOP grid, every replicate: the runs the scaling laws are fitted to."""
        return [
            self.make_point(objective, flops, name, replicate=k)
            for objective in self.objectives
            for flops, names in self.budgets
            for name in names
            for k in range(self.seeds)
        ]

    def support_points(self) -> list[ScalingPoint]:
        """Source runs, baselines and references of the transfer and repetition runs that are not IsoFLOP
        points (:mod:`plmscale.variants`): trained, but not fitted as IsoFLOP runs."""
        grid = {p.run_id for p in self.isoflop_points()}
        out: dict[str, ScalingPoint] = {}
        for spec in (*self.transfers, *self.repetitions):
            for point in spec.support(self):
                if point.run_id not in grid:
                    out.setdefault(point.run_id, point)
        return list(out.values())

    def transfer_points(self) -> list[ScalingPoint]:
        return [point for spec in self.transfers for point in spec.points(self)]

    def repetition_points(self) -> list[ScalingPoint]:
        return [point for spec in self.repetitions for point in spec.points(self)]

    def points(self) -> list[ScalingPoint]:
        return (
            self.isoflop_points() + self.support_points() + self.transfer_points() + self.repetition_points()
        )

    @functools.cached_property
    def _by_run_id(self) -> dict[str, ScalingPoint]:
        return {p.run_id: p for p in self.points()}

    def point(self, objective: str, budget: str, name: str) -> ScalingPoint:
        found = self._by_run_id.get(f"{objective}/{budget}/{name}")
        if found is None:
            raise KeyError(f"no scaling point {objective}/{budget}/{name} in the grid")
        return found


def load_study(config: Mapping[str, Any]) -> Study:
    """Build the grid from a schema-valid config and check that it can be trained."""
    grid, train = config["grid"], config["train"]
    shapes: dict[str, ModelShape] = {}
    for name, spec in grid["shapes"].items():
        try:
            shapes[name] = ModelShape(layers=spec["layers"], width=spec["width"], heads=spec["heads"])
        except ValueError as err:
            raise ValueError(f"grid.shapes.{name}: {err}") from None
    objectives = tuple(grid["objectives"])
    for objective in objectives:
        if objective not in OBJECTIVES:
            raise ValueError(f"grid.objectives: {objective!r} is not one of {OBJECTIVES}")
    budgets = []
    seen_labels: set[str] = set()
    for i, budget in enumerate(grid["budgets"]):
        flops = float(budget["flops"])
        label = flops_label(flops)
        if label in seen_labels:
            raise ValueError(f"grid.budgets[{i}]: budget {flops:g} FLOPs is listed twice; merge the entries")
        seen_labels.add(label)
        for name in budget["shapes"]:
            if name not in shapes:
                raise ValueError(
                    f"grid.budgets[{i}] (flops {flops:g}) names shape {name!r}, which is not defined in "
                    f"grid.shapes; allowed: {sorted(shapes)}"
                )
        if len(set(budget["shapes"])) != len(budget["shapes"]):
            raise ValueError(f"grid.budgets[{i}] (flops {flops:g}) lists a shape twice: {budget['shapes']}")
        budgets.append((flops, tuple(budget["shapes"])))
    for name in shapes:
        if VARIANT_SUFFIX.search(name):
            raise ValueError(
                f"grid.shapes.{name}: a shape name must not end like a replicate, transfer or repetition run "
                "(-s<k>, -from-<objective><budget>, -x<epochs>); rename the shape"
            )
    study = Study(
        objectives=objectives,
        shapes=shapes,
        budgets=tuple(budgets),
        context=int(train["context"]),
        batch_rows={n: int(grid["shapes"][n].get("batch_rows", train["batch_rows"])) for n in shapes},
        min_steps=int(train["min_steps"]),
        seeds=int(grid.get("seeds", 1)),
    )
    study = dataclasses.replace(
        study,
        transfers=parse_transfers(grid.get("transfer") or [], study),
        repetitions=parse_repetitions(grid.get("repetition") or [], study, sources=sorted(config["sources"])),
    )
    for point in study.points():
        if point.num_steps < study.min_steps:
            raise ValueError(
                f"impossible grid point {point.run_id}: budget {point.flops:g} FLOPs buys D = C/(6N) = "
                f"{point.num_tokens:,.0f} tokens for N = {point.n_params:,}, only {point.num_steps} steps of "
                f"{study.tokens_per_step(point.shape_name)} tokens (train.min_steps = {study.min_steps}); "
                "raise the budget, "
                "use a smaller shape, or lower train.batch_rows"
            )
    check_fractions(config["split"]["fractions"])
    check_proportions(config["sources"])
    check_data_config(config)
    return study


def check_proportions(sources: Mapping[str, Mapping[str, Any]]) -> None:
    """Every source gives a ``proportion`` (together summing to 1) or none does (concatenation)."""
    given = {name: spec["proportion"] for name, spec in sources.items() if "proportion" in spec}
    if not given:
        return
    missing = sorted(set(sources) - set(given))
    if missing:
        raise ValueError(
            f"sources {missing} have no proportion while {sorted(given)} do; give every source a "
            "proportion (together summing to 1) or none (the sources are then concatenated)"
        )
    total = sum(given.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"source proportions {given} sum to {total:g}, not 1; rescale them")


def check_data_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> None:
    """Check the data stages' settings; raise ``ValueError`` naming the key and the fix.

    Each source is checked against the schema branch (``$defs.source``) of its ``kind``: unknown and missing
    keys and bad values get a readable message (the schema's ``oneOf`` alone says only "is not valid under
    any of the given schemas"). ``validate.min_length`` must not exceed ``validate.max_length``.
    """
    _check_sources(config.get("sources"), read_yaml(schema_path))
    limits = config.get("validate") or {}
    low, high = limits.get("min_length", 1), limits.get("max_length")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        raise ValueError(
            f"validate.min_length ({low}) is greater than validate.max_length ({high}), so no record could "
            "be kept. Fix: lower validate.min_length or raise validate.max_length (null = no limit)."
        )


def _check_sources(sources: Any, schema: Mapping[str, Any]) -> None:
    """Check each source against the schema branch of its kind (a non-mapping is left to the schema)."""
    import jsonschema

    if not isinstance(sources, Mapping):
        return
    branches = {b["properties"]["kind"]["const"]: b for b in schema["$defs"]["source"]["oneOf"]}
    root = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for name, spec in sources.items():
        where = f"sources.{name}"
        kind = spec.get("kind") if isinstance(spec, Mapping) else None
        if kind not in branches:
            got = f"kind {kind!r}" if isinstance(spec, Mapping) else repr(spec)
            problems.append(f"{where}: {got} is not a source; set kind to one of {sorted(branches)}")
            continue
        branch = branches[kind]
        allowed, required = list(branch["properties"]), branch.get("required", [])
        problems += [
            f"{where}: unknown key {k!r} for kind {kind!r}; allowed: {allowed}"
            for k in spec
            if k not in allowed
        ]
        problems += [
            f"{where}: missing key {k!r} for kind {kind!r} (required: {required})"
            for k in required
            if k not in spec
        ]
        for err in root.evolve(schema=branch).iter_errors(spec):
            if err.validator not in ("additionalProperties", "required"):
                key = "".join(f".{part}" for part in err.absolute_path)
                problems.append(f"{where}{key}: {err.message}")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file, with libyaml's safe loader when PyYAML has it (the same results, ~10x faster: the schema
    and the config are read at every Snakemake start)."""
    with open(path) as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Validate against the JSON Schema (draft 2020-12), filling defaults; errors name the key path.

    Strings where the schema asks for a number, integer, boolean or null and that parse cleanly as one are
    converted first (Snakemake's ``--config 'train={lr: 0.001}'`` passes ``'0.001'``;
    :func:`plmscale.config_merge.coerce_to_schema`). The sources are then checked, each against the schema
    branch of its kind (:func:`check_data_config`), so that a bad source gets a readable message rather
    than the schema's ``oneOf`` one.
    """
    import jsonschema

    from plmscale.config_merge import coerce_to_schema

    schema = read_yaml(schema_path)
    coerce_to_schema(config, schema)
    _check_sources(config.get("sources"), schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(validator_cls)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"config key {where}: {err.message}")
        raise ValueError("invalid configuration:\n  " + "\n  ".join(lines))


def _with_defaults(validator_cls):
    """A validator that fills ``default`` values of object properties before validating them."""
    import jsonschema

    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
