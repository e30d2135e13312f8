"""User configs merged over the embedded defaults, and --config strings back to the schema's types
(plmscale.config_merge)."""

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from plmscale.config import load_study, read_yaml, validate_config  # noqa: E402
from plmscale.config_merge import (  # noqa: E402
    coerce_to_schema,
    merge_config,
    read_user_config,
    study_config,
    update_layers,
)

SCHEMA = REPO / "config" / "schema.yaml"
DEFAULTS = {
    "sources": {"curated": {"kind": "embedded", "name": "pyhmmer_proteome", "proportion": 0.3}},
    "train": {"lr": 0.002, "context": 128, "mlm": {"mask_ratio": 0.15}},
    "grid": {
        "objectives": ["clm", "mlm"],
        "shapes": {"t14k": {"layers": 1, "width": 32, "heads": 2}},
        "budgets": [{"flops": 3e10, "shapes": ["t14k"]}],
        "seeds": 1,
        "transfer": [{"objective": "mlm", "from": "clm"}],
        "repetition": [{"objective": "mlm", "source": "curated"}],
    },
    "downstream": {"enabled": True, "datasets": {"proxy": {"kind": "proxy"}}, "models": {}},
    "hwbench": {"enabled": True, "model": "mlm_3e10_t14k"},
}


def test_mappings_merge_key_by_key_and_lists_and_scalars_replace():
    user = {"train": {"lr": 0.001, "mlm": {"mask_ratio": 0.2}}, "grid": {"objectives": ["mlm"], "seeds": 3}}
    merged = merge_config(DEFAULTS, user)
    assert merged["train"] == {"lr": 0.001, "context": 128, "mlm": {"mask_ratio": 0.2}}
    assert merged["grid"]["objectives"] == ["mlm"] and merged["grid"]["seeds"] == 3
    assert merged["grid"]["shapes"] == DEFAULTS["grid"]["shapes"]  # not set by the user: the default's
    assert merged["sources"] == DEFAULTS["sources"]


def test_sources_and_other_named_collections_replace_as_a_whole():
    mine = {"mine": {"kind": "fasta", "path": "my.fasta"}}
    merged = merge_config(DEFAULTS, {"sources": mine, "downstream": {"datasets": {"t": {"kind": "table"}}}})
    assert merged["sources"] == mine  # the sample's curated source is not mixed in
    assert merged["downstream"] == {"enabled": True, "datasets": {"t": {"kind": "table"}}, "models": {}}
    shapes = {"big": {"layers": 2, "width": 64, "heads": 4}}
    assert merge_config(DEFAULTS, {"grid": {"shapes": shapes}})["grid"]["shapes"] == shapes


def test_defaults_that_name_replaced_entries_are_dropped():
    # sources only: the repetition run names the sample's source -> dropped; transfer and hwbench name
    # only grid entries, which are the defaults' -> kept
    merged = merge_config(DEFAULTS, {"sources": {"mine": {"kind": "fasta", "path": "x"}}})
    assert merged["grid"]["repetition"] == [] and merged["grid"]["transfer"] == DEFAULTS["grid"]["transfer"]
    assert merged["hwbench"] == DEFAULTS["hwbench"]
    # budgets set: transfer, repetition and hwbench all name the defaults' grid -> dropped
    merged = merge_config(DEFAULTS, {"grid": {"budgets": [{"flops": 1e9, "shapes": ["t14k"]}]}})
    assert merged["grid"]["transfer"] == [] and merged["grid"]["repetition"] == []
    assert merged["hwbench"] == {"enabled": False}
    # a dependent the user sets is the user's
    user = {"grid": {"budgets": [], "transfer": [{"objective": "clm"}]}, "hwbench": {"model": "m"}}
    merged = merge_config(DEFAULTS, user)
    assert merged["grid"]["transfer"] == [{"objective": "clm"}] and merged["grid"]["repetition"] == []
    assert merged["hwbench"] == {"enabled": True, "model": "m"}


def test_merge_copies_and_modifies_neither_input():
    defaults, user = copy.deepcopy(DEFAULTS), {"train": {"lr": 0.1}}
    merged = merge_config(defaults, user)
    merged["train"]["mlm"]["mask_ratio"] = 0.5
    assert defaults == DEFAULTS and user == {"train": {"lr": 0.1}}


def test_files_merge_in_order_like_snakemake():
    layers = [{"train": {"lr": 1, "seed": 2}, "sources": {"a": {"kind": "x"}}}, {"train": {"lr": 3}}]
    assert update_layers(layers) == {"train": {"lr": 3, "seed": 2}, "sources": {"a": {"kind": "x"}}}


def test_read_user_config_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(ValueError, match=r"config file .*nope.yaml does not exist"):
        read_user_config([tmp_path / "nope.yaml"])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="is not a YAML mapping"):
        read_user_config([tmp_path / "list.yaml"])


@pytest.mark.parametrize("name", ["config/paper.yaml", "tests/config/config.yaml", "config/config.yaml"])
def test_complete_configs_mean_what_they_meant_before(name):
    """A complete config gives the same validated study merged or not (the keys it leaves out take the
    embedded values, which equal the schema's defaults)."""
    alone = read_yaml(REPO / name)
    merged = study_config(read_yaml(REPO / name))
    validate_config(alone, SCHEMA)
    validate_config(merged, SCHEMA)
    assert merged == alone
    assert [p.run_id for p in load_study(merged).points()] == [p.run_id for p in load_study(alone).points()]


def test_a_sources_only_config_is_a_valid_study():
    merged = study_config({"sources": {"mine": {"kind": "fasta", "path": "my.fasta.gz"}}})
    validate_config(merged, SCHEMA)
    study = load_study(merged)
    assert list(merged["sources"]) == ["mine"]
    assert {p.kind for p in study.points()} == {"isoflop", "transfer"}  # the repetition named `curated`


def test_config_strings_become_the_schemas_types():
    schema = read_yaml(SCHEMA)
    config = study_config({})
    # what `snakemake --config 'train={lr: 0.001, ...}'` hands over: nested values as strings
    config["train"].update(lr="0.001", min_steps="20", compile="true", peak_flops="null", launcher="123")
    config["grid"]["budgets"][0]["flops"] = "3e10"
    config["downstream"]["lr"] = {"frozen": "1e-2", "full": "3.0e-3"}
    config["hwbench"]["reference_device"] = "null"
    config["sources"]["curated"]["proportion"] = ".28"
    changed = coerce_to_schema(config, schema)
    t = config["train"]
    assert (t["lr"], t["min_steps"], t["compile"], t["peak_flops"]) == (0.001, 20, True, None)
    assert type(t["min_steps"]) is int and t["launcher"] == "123"  # a string where the schema asks one
    assert config["grid"]["budgets"][0]["flops"] == "3e10"  # flops may be a string: left to the schema
    assert config["downstream"]["lr"] == {"frozen": 0.01, "full": 0.003}
    assert config["hwbench"]["reference_device"] is None
    assert config["sources"]["curated"]["proportion"] == 0.28
    assert "train.lr: '0.001' -> 0.001" in changed and len(changed) == 8
    validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("lr", "abc", r"config key train.lr: 'abc' is not of type 'number'"),
        ("min_steps", "2.5", r"config key train.min_steps: '2.5' is not of type 'integer'"),
        ("compile", "yes please", r"config key train.compile: 'yes please' is not of type 'boolean'"),
    ],
)
def test_strings_that_do_not_parse_cleanly_still_fail_naming_the_key(key, text, message):
    config = study_config({})
    config["train"][key] = text
    with pytest.raises(ValueError, match=message):
        validate_config(config, SCHEMA)
