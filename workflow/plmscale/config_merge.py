"""A user's config over the embedded defaults, and ``--config`` values back to the types the schema asks.

**The merge** (:func:`merge_config`). The study's config is ``config/config.yaml`` (the embedded sample)
with the user's layer on top: the ``--configfile`` files (merged in order, as Snakemake does) and the
``--config`` values. The rules, in order:

1. Mappings merge key by key, recursively; a list or a scalar from the user replaces the default's.
2. **Named collections replace as a whole**: ``sources``, ``grid.shapes``, ``downstream.datasets`` and
   ``downstream.models``. A study's data, shapes, data sets and checkpoints are its own; merging in the
   sample's would silently mix them in (a three-line config with your FASTA would still train on the
   sample's proteins).
3. **Defaults that name the defaults' entries are dropped when those entries are replaced**:
   ``grid.transfer`` and ``grid.repetition`` (they name objectives, budgets, shapes and sources) become
   ``[]``, and ``hwbench`` becomes ``{enabled: false}`` (it names a run and a data set), when the user's
   layer sets any key they refer to (:data:`DEPENDS_ON`) and not the dependent key itself.

A complete config (``config/paper.yaml``) is therefore unchanged by the merge except for keys it leaves
out, which take the embedded values (the same values as the schema's defaults).

**Types** (:func:`coerce_to_schema`). Snakemake's ``--config 'train={lr: 0.001}'`` leaves nested values as
strings (``'0.001'``). Before validation, a string is converted where the schema's ``type`` at that key does
not allow a string and the text parses cleanly as one of the allowed types (integer, number, boolean,
null); any other string is left alone, so the schema reports it with its key.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULTS_PATH = Path(__file__).resolve().parents[2] / "config" / "config.yaml"

REPLACE_WHOLE: tuple[tuple[str, ...], ...] = (
    ("sources",),
    ("grid", "shapes"),
    ("downstream", "datasets"),
    ("downstream", "models"),
)
_GRID_NAMES = (("grid", "objectives"), ("grid", "shapes"), ("grid", "budgets"))
DEPENDS_ON: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {
    ("grid", "transfer"): _GRID_NAMES,
    ("grid", "repetition"): (("sources",), *_GRID_NAMES),
    ("hwbench",): (
        *_GRID_NAMES,
        ("downstream", "enabled"),
        ("downstream", "objectives"),
        ("downstream", "datasets"),
        ("downstream", "models"),
    ),
}
DROPPED_VALUE: dict[tuple[str, ...], Any] = {
    ("grid", "transfer"): [],
    ("grid", "repetition"): [],
    ("hwbench",): {"enabled": False},
}


def _has(tree: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return False
        tree = tree[key]
    return True


def _deep_merge(base: Any, over: Any, path: tuple[str, ...]) -> Any:
    if path in REPLACE_WHOLE or not (isinstance(base, Mapping) and isinstance(over, Mapping)):
        return copy.deepcopy(over)
    out = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in over.items():
        out[key] = _deep_merge(base[key], value, (*path, key)) if key in base else copy.deepcopy(value)
    return out


def merge_config(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """The study config: ``user`` merged over ``defaults`` by the module's rules (neither is modified)."""
    if not isinstance(user, Mapping):
        raise ValueError(f"the user config must be a mapping of keys to values, got {type(user).__name__}")
    dropped = {
        path
        for path, refs in DEPENDS_ON.items()
        if not _has(user, path) and any(_has(user, ref) for ref in refs)
    }
    base = copy.deepcopy(dict(defaults))
    for path in dropped:
        parent = base
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        parent[path[-1]] = copy.deepcopy(DROPPED_VALUE[path])
    return _deep_merge(base, user, ())


def update_layers(layers: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The user's layer from several files (and then ``--config`` values), merged in order the way
    Snakemake merges ``--configfile`` files: every mapping key by key, nothing replaced whole."""
    out: dict[str, Any] = {}

    def update(into: dict[str, Any], over: Mapping[str, Any]) -> None:
        for key, value in over.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                update(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    for layer in layers:
        update(out, layer or {})
    return out


def study_config(user: Mapping[str, Any], defaults_path: str | Path = DEFAULTS_PATH) -> dict[str, Any]:
    """The study config: the user's layer merged over the embedded defaults file (:func:`merge_config`)."""
    import yaml

    with open(defaults_path) as handle:
        return merge_config(yaml.safe_load(handle), user)


def read_user_config(paths: list[str | Path]) -> dict[str, Any]:
    """The user's layer of ``--configfile`` files (a missing or non-mapping file is a ``ValueError``)."""
    import yaml

    layers = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"config file {path} does not exist (relative to {Path.cwd()})")
        with open(path) as handle:
            layer = yaml.safe_load(handle)
        if layer is not None and not isinstance(layer, Mapping):
            raise ValueError(f"config file {path} is not a YAML mapping of keys to values")
        layers.append(layer or {})
    return update_layers(layers)


# --- --config values back to their schema types -------------------------------------------------------

_INT = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_BOOLEANS = {"true": True, "false": False}
_NULLS = ("null", "~", "none")


def _parse_as(text: str, kind: str) -> tuple[bool, Any]:
    """(parsed, value) of ``text`` as a JSON Schema type; (False, None) when it does not parse cleanly."""
    s = text.strip()
    if kind == "integer" and _INT.match(s):
        return True, int(s)
    if kind == "number" and _NUMBER.match(s):
        value = float(s)
        return (True, value) if math.isfinite(value) else (False, None)
    if kind == "boolean" and s.lower() in _BOOLEANS:
        return True, _BOOLEANS[s.lower()]
    if kind == "null" and s.lower() in _NULLS:
        return True, None
    return False, None


class _Coercer:
    """Walks an instance along its schema (properties, additionalProperties, items, $ref, allOf, and the
    oneOf/anyOf branch an object's ``const`` keys select), converting strings in place."""

    def __init__(self, root: Mapping[str, Any]):
        self.root = root
        self.changed: list[str] = []

    def resolve(self, schema: Any) -> Any:
        while isinstance(schema, Mapping) and "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                return {}
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def branches(self, schema: Mapping[str, Any], value: Any) -> list[Mapping[str, Any]]:
        out = [schema]
        for key in ("allOf",):
            out += [self.resolve(s) for s in schema.get(key, [])]
        for key in ("oneOf", "anyOf"):
            options = [self.resolve(s) for s in schema.get(key, [])]
            if isinstance(value, Mapping):
                options = [s for s in options if self._selects(s, value)]
            out += options if isinstance(value, Mapping) and len(options) == 1 else []
            if isinstance(value, str):
                out += options
        return out

    def _selects(self, schema: Mapping[str, Any], value: Mapping[str, Any]) -> bool:
        consts = {k: s["const"] for k, s in schema.get("properties", {}).items() if "const" in s}
        return schema.get("type") == "object" and all(value.get(k) == c for k, c in consts.items())

    def scalar(self, schema: Mapping[str, Any], value: str, where: str) -> Any:
        free: set[str] = set()  # JSON types any value of which the schema allows here
        members: list[Any] = []  # non-string enum/const members (a parsed value must be one of them)
        for s in self.branches(schema, value):
            t = s.get("type")
            types = {t} if isinstance(t, str) else set(t or [])
            options = list(s["enum"]) if "enum" in s else [s["const"]] if "const" in s else None
            if options is not None:
                if value in options:
                    return value
                members += [e for e in options if not isinstance(e, str)]
            elif "string" in types:
                return value  # a string is a meaningful value here
            else:
                free |= types
        for kind in ("null", "boolean", "integer", "number"):
            ok, parsed = _parse_as(value, kind)
            if ok and (kind in free or any(parsed == m and type(parsed) is type(m) for m in members)):
                self.changed.append(f"{where}: {value!r} -> {parsed!r}")
                return parsed
        return value

    def walk(self, schema: Any, value: Any, where: str) -> Any:
        schema = self.resolve(schema)
        if not isinstance(schema, Mapping):
            return value
        if isinstance(value, str):
            return self.scalar(schema, value, where)
        for s in self.branches(schema, value):
            if isinstance(value, dict):
                props = s.get("properties", {})
                extra = s.get("additionalProperties")
                for key in list(value):
                    sub = props.get(key, extra if isinstance(extra, Mapping) else None)
                    if sub is not None:
                        value[key] = self.walk(sub, value[key], f"{where}.{key}" if where else str(key))
            elif isinstance(value, list) and isinstance(s.get("items"), Mapping):
                for i, item in enumerate(value):
                    value[i] = self.walk(s["items"], item, f"{where}[{i}]")
        return value


def coerce_to_schema(config: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Convert, in place, string values of ``config`` to the type ``schema`` asks at their key (see the
    module docstring); returns one ``"key: 'text' -> value"`` line per conversion."""
    coercer = _Coercer(schema)
    coercer.walk(schema, config, "")
    return coercer.changed
