"""config/README.md is generated from config/schema.yaml (plmscale.config_docs) and never goes stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from plmscale.config_docs import README_PATH, key_docs, load, render, type_of

REPO = Path(__file__).resolve().parents[1]


def rows(text: str) -> dict[str, list[str]]:
    """The README's table rows by key: [type, default, description]."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0].strip("`")] = [cells[1], cells[2].strip("`"), cells[3]]
    return out


def test_committed_readme_is_the_generated_one():
    generated = subprocess.run(
        [sys.executable, "-m", "plmscale.config_docs"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert README_PATH.read_text() == generated, (
        "config/README.md is stale: run `python -m plmscale.config_docs > config/README.md`"
    )


def test_every_key_of_the_schema_has_a_row_with_a_description():
    schema, defaults = load()
    docs = key_docs(schema, defaults)
    assert [d.path for d in docs if not d.description] == []
    table = rows(README_PATH.read_text())
    # every leaf of a few sections, listed from the schema independently of the generator's walk
    for section in ("train", "cluster", "validate", "hwbench", "paper", "download"):
        for key in schema["properties"][section]["properties"]:
            assert f"{section}.{key}" in table, f"{section}.{key}"
    assert "sources.<name> (kind: fasta).path" in table and "grid.budgets[].flops" in table


def test_rows_give_type_default_and_description_by_hand():
    table = rows(README_PATH.read_text())
    # config/config.yaml sets validate.min_length: 30 (the schema's default is 1): a user gets 30
    assert table["validate.min_length"][:2] == ["integer, >= 1", "30"]
    embedded = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert embedded["paper"]["approach3_grid"] == "full"
    assert table["paper.approach3_grid"][:2] == ["one of small, full", '"full"']
    assert table["sources.<name> (kind: fasta).path"][1] == "required"  # a kind's own required key
    assert table["cluster.method"][0] == "one of linclust, cluster"
    assert table["train.expected_mfu"][0] == "number, > 0, <= 1"
    assert table["grid.shapes.<name>.layers"][1] == "required"
    assert table["train.plan_peak_flops"][1] == "9.894e+14"
    assert table["cluster.threads"][2].startswith("--threads")


def test_types_follow_refs_oneofs_and_lists():
    schema = {"$defs": {"n": {"type": "integer", "minimum": 1}}}
    assert type_of({"$ref": "#/$defs/n"}, schema) == "integer, >= 1"
    assert type_of({"oneOf": [{"type": "number"}, {"type": "string"}]}, schema) == "number or string"
    assert type_of({"type": "array", "items": {"enum": ["a", None]}}, schema) == "list of one of a, null"
    assert type_of({"const": "fasta"}, schema) == '= "fasta"'


def test_render_lists_a_section_per_top_level_key():
    schema = {
        "description": "d",
        "properties": {"a": {"type": "object", "description": "the a section", "properties": {
            "x": {"type": "integer", "default": 3, "description": "an x"}}}},
    }  # fmt: skip
    text = render(schema, {"a": {"x": 5}})
    assert "## `a`\n\nthe a section\n" in text
    assert "| `a.x` | integer | `5` | an x |" in text  # the embedded value wins over the schema's default
    assert "| `a.x` | integer | `3` | an x |" in render(schema, {})
