"""FLOPs/parameter accounting and the config -> grid layer, against hand-worked values."""

import copy
from pathlib import Path

import pytest
from plmscale.config import flops_label, load_study, read_yaml, validate_config
from plmscale.flops import (
    ModelShape,
    flops_per_token_with_attention,
    n_params_non_embedding,
    steps_for_budget,
    tokens_for_budget,
    training_flops,
)
from plmscale.model import build_model, count_parameters

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def test_non_embedding_count_hand_worked():
    # L=2, d=64, f=256, V=33: per block 4(d^2+d) + 4d + 2df + f + d = 16640 + 256 + 32768 + 256 + 64 = 49984
    # outside: 2d + 2d + (d^2 + d) + 2d + V = 128 + 128 + 4160 + 128 + 33 = 4577
    assert n_params_non_embedding(ModelShape(2, 64, 4), 33) == 2 * 49984 + 4577 == 104545


@pytest.mark.parametrize("shape", [ModelShape(1, 32, 2), ModelShape(3, 48, 4), ModelShape(2, 96, 8)])
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_formula_matches_the_built_hf_model(shape, objective):
    model = build_model(shape, objective, context=64, seed=0)
    non_embedding, embedding = count_parameters(model)
    assert non_embedding == n_params_non_embedding(shape, 33)
    assert embedding == shape.width * (33 + 64 + 2 + 1)  # tokens + (context + offset) positions + 1 type


def test_budget_arithmetic():
    n = 104545
    assert training_flops(n, 1000) == 6 * n * 1000
    assert tokens_for_budget(6e9, 1_000_000) == pytest.approx(1000.0)
    # D = 1e11 / (6 * 104545) = 159,420.3 tokens -> 78 steps of 2048 tokens (77.84 rounded up)
    assert steps_for_budget(1e11, n, 2048) == 78
    assert flops_per_token_with_attention(ModelShape(2, 64, 4), n, 128) == 6 * n + 12 * 2 * 64 * 128


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="width=64 is not divisible by heads=5"):
        ModelShape(2, 64, 5)
    with pytest.raises(ValueError, match="layers=0"):
        ModelShape(0, 64, 4)


@pytest.mark.parametrize(
    ("flops", "label"), [(3e10, "3e10"), (1e11, "1e11"), (2.5e12, "2.5e12"), (1e21, "1e21")]
)
def test_flops_label(flops, label):
    assert flops_label(flops) == label


def _config():
    config = read_yaml(REPO / "config" / "config.yaml")
    validate_config(config, SCHEMA)
    return config


def test_default_grid():
    study = load_study(_config())
    assert len(study.isoflop_points()) == 2 * 3 * 4
    # the embedded default also trains 3 CLM->MLM transfer runs and 3 MLM repetition runs, all of whose
    # sources and references are IsoFLOP points
    assert len(study.transfer_points()) == 3 and len(study.repetition_points()) == 3
    assert study.support_points() == [] and len(study.points()) == 30
    p = study.point("mlm", "1e11", "t105k")
    assert (p.n_params, p.num_steps) == (104545, 78)
    assert p.run_id == "mlm/1e11/t105k"


def test_unknown_key_is_rejected_with_its_path():
    config = _config()
    config["train"]["learning_rate"] = 1e-3
    with pytest.raises(ValueError, match=r"config key train: Additional properties .*'learning_rate'"):
        validate_config(config, SCHEMA)


def test_wrong_type_names_key():
    config = _config()
    config["train"]["batch_rows"] = "sixteen"
    with pytest.raises(ValueError, match=r"config key train.batch_rows: 'sixteen' is not of type 'integer'"):
        validate_config(config, SCHEMA)


def test_wrong_enum_lists_allowed_values():
    config = _config()
    config["cluster"]["method"] = "cdhit"
    with pytest.raises(
        ValueError, match=r"config key cluster.method: 'cdhit' is not one of \['linclust', 'cluster'\]"
    ):
        validate_config(config, SCHEMA)


def test_impossible_grid_point():
    config = _config()
    config["grid"]["budgets"][0]["flops"] = 1e9
    with pytest.raises(ValueError, match=r"impossible grid point clm/1e9/t14k: .* only 6 steps"):
        load_study(config)


def test_budget_naming_an_undefined_shape():
    config = _config()
    config["grid"]["budgets"][0]["shapes"].append("huge")
    with pytest.raises(ValueError, match=r"names shape 'huge'.*allowed: \["):
        load_study(config)


def test_heads_must_divide_width():
    config = copy.deepcopy(_config())
    config["grid"]["shapes"]["t14k"]["heads"] = 3
    with pytest.raises(
        ValueError, match=r"grid.shapes.t14k: model shape width=32 is not divisible by heads=3"
    ):
        load_study(config)


def test_flops_as_text_from_yaml():
    config = _config()
    config["grid"]["budgets"][0]["flops"] = "3e10"  # YAML reads an unsigned exponent as a string
    validate_config(config, SCHEMA)
    assert load_study(config).budgets[0][0] == 3e10
