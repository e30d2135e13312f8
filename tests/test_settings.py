"""One typed settings path: run and execution settings built once from the validated config (defaults from
the schema), JSON round trips, size tiers, per-job resources and the launcher check."""

import copy
import json
import math

import pytest
from plmscale.config import read_yaml, validate_config
from plmscale.flops import ModelShape, n_params_non_embedding
from plmscale.settings import (
    ExecutionSettings,
    TrainJob,
    TrainSettings,
    execution_config,
    execution_settings,
    job_resources,
    run_settings,
)

from tests.trainkit import REPO

SCHEMA = REPO / "config" / "schema.yaml"


def config(name: str = "config.yaml", **train) -> dict:
    cfg = read_yaml(REPO / "config" / name)
    cfg["train"].update(train)
    validate_config(cfg, SCHEMA)
    return cfg


def test_run_settings_of_a_point_take_shape_lr_and_objective_mask_ratio():
    cfg = config()
    cfg["grid"]["shapes"]["t27k"]["lr"] = 0.004
    mlm = run_settings(cfg, "mlm", 1e11, "t27k")
    clm = run_settings(cfg, "clm", 1e11, "t59k")
    assert mlm.shape == ModelShape(2, 32, 2) and mlm.peak_lr == 0.004 and mlm.mask_ratio == 0.15
    assert clm.peak_lr == 0.002 and clm.mask_ratio == 0.0
    assert mlm.precision == "fp32" and mlm.batch_rows == 16 and mlm.eval_seed == cfg["evaluate"]["seed"]
    # D = C / 6N = 1e11 / (6 * N); steps = ceil(D / (16 * 128))
    n = n_params_non_embedding(ModelShape(2, 32, 2), 33)
    assert mlm.num_steps == math.ceil(1e11 / (6 * n) / (16 * 128))


def test_run_settings_and_jobs_round_trip_through_json():
    s = run_settings(config(), "mlm", 3e10, "t14k")
    assert TrainSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    job = TrainJob(run_id="mlm/3e10/t14k", run=s, train_dirs=("a", "b"), valid_dirs=("c",), out_dir="o",
                   checkpoint_dir=None)  # fmt: skip
    assert TrainJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    assert s.fingerprint() != run_settings(config(precision="bf16"), "mlm", 3e10, "t14k").fingerprint()


def test_a_job_written_by_another_version_is_refused_by_name():
    data = run_settings(config(), "mlm", 3e10, "t14k").to_dict()
    data["learning_rate"] = data.pop("peak_lr")
    with pytest.raises(ValueError, match=r"missing keys \['peak_lr'\], unknown keys \['learning_rate'\]"):
        TrainSettings.from_dict(data)


def test_execution_defaults_come_from_the_schema_and_tiers_apply_by_size():
    cfg = config()
    cfg["train"]["by_size"] = [
        {"min_params": 1e5, "micro_batch_rows": 4, "parallel": "fsdp"},
        {"min_params": 1e6, "micro_batch_rows": 2, "activation_checkpointing": True},
    ]
    base = execution_settings(cfg)
    assert base.attention == "sdpa" and base.micro_batch_rows == 0 and base.parallel == "ddp"
    assert execution_settings(cfg, 99_999) == base
    mid = execution_settings(cfg, 200_000)
    assert (mid.micro_batch_rows, mid.parallel, mid.activation_checkpointing) == (4, "fsdp", False)
    top = execution_settings(cfg, 5_000_000)  # the largest min_params <= N wins, alone
    assert (top.micro_batch_rows, top.parallel, top.activation_checkpointing) == (2, "ddp", True)
    # what the rule hands each job resolves to the same settings inside the job
    assert execution_settings(json.loads(json.dumps(execution_config(cfg))), 200_000) == mid


def test_execution_values_are_checked():
    values = execution_settings(config()).to_dict()
    with pytest.raises(ValueError, match=r"train.device='tpu' must be one of"):
        ExecutionSettings.from_dict({**values, "device": "tpu"})


def test_job_resources_estimate_runtime_from_flops_and_need_a_launcher_for_several_devices():
    cfg = config(devices=1, plan_peak_flops=1e12, expected_mfu=0.5, runtime_min=1, runtime_max=10_000)
    run = run_settings(cfg, "mlm", 3e11, "t240k")
    res = job_resources(cfg, run)
    n, shape = run.n_params, run.shape
    flops = (6 * n + 12 * shape.layers * shape.width * run.context) * run.num_steps * run.tokens_per_step
    seconds = flops / (1e12 * 0.5)
    assert res.estimated_hours == pytest.approx(seconds / 3600)
    assert res.runtime_min == math.ceil(1.25 * seconds / 60 + 10)
    assert (res.devices, res.gpu, res.mem_mb) == (1, 1, 4000)
    assert job_resources(config(device="cpu"), run).gpu == 0  # a CPU study asks for no GPU
    capped = job_resources(config(runtime_max=30, runtime_min=20, plan_peak_flops=1.0), run)
    assert capped.runtime_min == 30
    many = copy.deepcopy(cfg)
    many["train"]["devices"] = 4
    with pytest.raises(ValueError, match=r"trains on 4 devices .* train.launcher is empty"):
        job_resources(many, run)
    many["train"]["launcher"] = "torchrun --standalone --nproc_per_node={devices}"
    assert job_resources(many, run).devices == 4


def test_paper_shapes_from_1b_up_train_on_1m_token_batches():
    cfg = config("paper.yaml")
    small, big = run_settings(cfg, "clm", 1e20, "s860m"), run_settings(cfg, "clm", 1e21, "s1.2b")
    assert small.tokens_per_step == 512 * 1024 and big.tokens_per_step == 1024 * 1024
    assert small.precision == big.precision == "bf16" and small.warmup_fraction == 0.025
    assert (small.peak_lr, big.peak_lr) == (3.5e-4, 3.0e-4)
