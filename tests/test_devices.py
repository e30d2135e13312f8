"""Device choice, precision, peak FLOP/s, MFU and memory estimates (plmscale.devices, .peaks, .memory),
on this CPU machine.

CUDA and Gaudi are absent here: their tests check the failure paths (clear error, no CPU fallback) and the
pure functions (name -> peak table, arithmetic); nothing here claims a GPU or Gaudi code path ran.
"""

import json
import socket

import numpy as np
import pytest
import torch
from plmscale import devices, memory, peaks
from plmscale.devices import DEVICES, DeviceUnavailable, autocast, resolve_device
from plmscale.fasta_index import index_fasta
from plmscale.flops import ModelShape
from plmscale.memory import check_memory_fits, estimate_training_memory_bytes
from plmscale.model import build_model
from plmscale.peaks import accelerator_entry, lookup_peak, mfu, peak_flops
from plmscale.tokenize import tokenize_shard

HAS_ACCELERATOR = torch.cuda.is_available() or devices.probe_devices()["hpu_available"]
no_accelerator = pytest.mark.skipif(
    HAS_ACCELERATOR, reason="asserts the behaviour of a machine without GPU/HPU"
)


@no_accelerator
@pytest.mark.parametrize("requested", ["cuda", "hpu"])
def test_absent_accelerator_is_a_clear_error_not_a_cpu_fallback(requested):
    with pytest.raises(DeviceUnavailable) as err:
        resolve_device(requested, log=None)
    message = str(err.value)
    assert f"train.device={requested!r}" in message
    assert socket.gethostname() in message
    assert "torch.cuda.is_available()=False" in message and "HPUs=0" in message  # what was found
    assert "CUDA_VISIBLE_DEVICES=" in message and "HABANA_VISIBLE_MODULES=" in message
    assert "partition" in message and "train.device: cpu" in message  # the fix
    assert isinstance(err.value, RuntimeError)


@no_accelerator
def test_auto_picks_the_cpu_here_and_says_why():
    lines = []
    device = resolve_device("auto", log=lines.append)
    assert device == torch.device("cpu")
    assert len(lines) == 1
    assert "auto -> cpu" in lines[0] and "no accelerator is usable" in lines[0]
    assert "torch.cuda.is_available()=False" in lines[0]


def test_unknown_device_lists_the_choices():
    with pytest.raises(ValueError, match=r"'gpu' is not one of \('auto', 'cpu', 'cuda', 'hpu'\)"):
        resolve_device("gpu")
    assert DEVICES == ("auto", "cpu", "cuda", "hpu")


def test_unknown_precision_and_cpu_backends():
    with pytest.raises(ValueError, match=r"train\.precision='fp16'"):
        autocast(torch.device("cpu"), "fp16")
    assert devices.configure_backends(torch.device("cpu"), "bf16").startswith("backends: no changes")
    assert devices.distributed_backend(torch.device("cpu")) == "gloo"
    assert devices.distributed_backend(torch.device("cuda")) == "nccl"
    marker = devices.step_marker(torch.device("cpu"))
    assert marker() is None  # no-op off Gaudi
    assert devices.execution_mode(torch.device("cpu")) == "eager"


def test_bf16_autocast_changes_the_matmul_dtype_and_fp32_does_not():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # master weights stay fp32


@pytest.mark.parametrize(
    ("name", "precision", "peak", "source"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12, "table: NVIDIA H100 SXM bf16"),
        ("NVIDIA H100 80GB HBM3", "fp32", 494.7e12, "table: NVIDIA H100 SXM tf32"),
        ("NVIDIA H100 PCIe", "bf16", 756e12, "table: NVIDIA H100 PCIe bf16"),
        ("NVIDIA H200", "bf16", 989.4e12, "table: NVIDIA H200 bf16"),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12, "table: NVIDIA A100 bf16"),
        ("NVIDIA A100-PCIE-40GB", "fp32", 156e12, "table: NVIDIA A100 tf32"),
        ("NVIDIA A100 80GB PCIe", "bf16", 312e12, "table: NVIDIA A100 bf16"),
        ("GAUDI2", "bf16", 432e12, "table: Intel Gaudi 2 bf16"),
        ("GAUDI3", "bf16", 1835e12, "table: Intel Gaudi 3 bf16"),
    ],
)
def test_peak_table_lookup_from_device_names(name, precision, peak, source):
    value, where = lookup_peak(name, precision)
    assert value == peak
    assert where.startswith(source)


def test_peak_lookup_unknowns_and_plain_fp32():
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "fp32", tf32=False) == (19.5e12, "table: NVIDIA A100 fp32")
    for name in ("NVIDIA H100 NVL", "NVIDIA H100", "Tesla V100-SXM2-32GB", "GAUDI", "AMD EPYC"):
        value, why = lookup_peak(name, "bf16")
        assert value is None and "no peak-FLOP/s entry" in why and name in why
    value, why = lookup_peak("GAUDI2", "fp32")  # Intel publishes no fp32 matrix peak: no guess
    assert value is None and "no fp32 peak for Intel Gaudi 2" in why
    assert accelerator_entry("NVIDIA H100 SXM5 80GB") == "NVIDIA H100 SXM"


def test_peak_flops_on_cpu_needs_an_override_or_a_measurement():
    cpu = torch.device("cpu")
    assert peak_flops(cpu, "fp32") == (None, "cpu: no table peak (measure it or give an override)")
    assert peak_flops(cpu, "bf16", override=900e9) == (900e9, "override")
    with pytest.raises(ValueError, match="must be positive"):
        peak_flops(cpu, "fp32", override=0.0)
    measured = peaks.measure_cpu_peak("fp32", seconds=0.05, size=128)
    assert 1e6 < measured < 1e14  # some real FLOP/s, below any CPU's plausible peak


def test_mfu_hand_worked():
    # 10,000 tokens/s x 6e8 FLOPs/token = 6e12 FLOP/s; against A100 bf16 312e12 -> 0.01923...
    assert mfu(10_000, 6e8, 312e12) == pytest.approx(6e12 / 312e12)
    assert mfu(10_000, 6e8, 312e12) == pytest.approx(0.019231, abs=1e-6)
    assert mfu(1.0, 1.0, None) is None
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)


def test_memory_estimate_hand_worked():
    # N=1000 params, L=2, d=8, a=2 heads, 2 rows x T=4 tokens, fp32 (4 B/value), one process, vocab 33:
    #   weights 4*1000 = 4000, gradients 4000, AdamW 8*1000 = 8000
    #   activations: 17 values * rows 2 * T 4 * d 8 * 4 B = 4352 per layer, x 2 layers = 8704
    #   scores: 2 values * rows 2 * heads 2 * T^2 16 * 4 B = 512 per layer, x 2 = 1024
    #   mask: 2 * 16 = 32 bytes; logits: 2 * 4 * 33 * (4 + 8) = 3168
    #   total = 4000 + 4000 + 8000 + 8704 + 1024 + 32 + 3168 = 28928
    est = estimate_training_memory_bytes(1000, 2, 8, 2, 2, 4, "fp32")
    assert est["weights"] == 4000 and est["gradients"] == 4000 and est["optimizer"] == 8000
    assert est["activations"] == 8704 and est["attention_scores"] == 1024
    assert est["attention_mask"] == 32 and est["logits"] == 3168
    assert est["ddp_buckets"] == est["fsdp_gathered"] == est["autocast_cache"] == 0
    assert est["total"] == 28928
    # bf16 (2 B/value), FSDP over 2 processes, activation checkpointing:
    #   weights 4000/2 = 2000, gradients 2000, AdamW 4000; gathered 2 layers * (1000/2 params) * 4 B = 4000;
    #   bf16 weight cache 2*1000/2 = 1000
    #   activations: inputs 2 layers * 2*4*8 values * 2 B = 256, + one full layer 17*2*4*8*2 = 2176 -> 2432
    #   scores: one layer 2*2*2*16*2 = 256; mask 32; logits 2*4*33*(2 + 8) = 2640
    #   total = 2000 + 2000 + 4000 + 4000 + 1000 + 2432 + 256 + 32 + 2640 = 18360
    est = estimate_training_memory_bytes(1000, 2, 8, 2, 2, 4, "bf16", "fsdp", 2, True)
    assert est["fsdp_gathered"] == 4000 and est["autocast_cache"] == 1000
    assert est["activations"] == 2432 and est["attention_scores"] == 256 and est["logits"] == 2640
    assert est["total"] == 18360
    # DDP over 2 processes keeps gradient buckets as large as the gradients; block-sparse attention keeps
    # neither the dense mask nor the scores
    est = estimate_training_memory_bytes(1000, 2, 8, 2, 2, 4, "fp32", "ddp", 2, dense_attention=False)
    assert est["ddp_buckets"] == 4000 and est["attention_scores"] == est["attention_mask"] == 0
    assert est["total"] == 28928 + 4000 - 1024 - 32


def test_memory_check_names_the_settings_to_change():
    est = estimate_training_memory_bytes(1000, 2, 8, 2, 2, 4, "fp32")  # 28928 bytes
    check_memory_fits(est, None)  # unknown device memory: no check
    check_memory_fits(est, 40_000)  # 28928 <= 0.9 * 40000
    with pytest.raises(memory.MemoryEstimateTooLarge) as err:
        check_memory_fits(est, 30_000, where="cuda:0")
    message = str(err.value)
    for setting in ("train.micro_batch_rows", "train.activation_checkpointing", "train.parallel: fsdp"):
        assert setting in message
    assert "cuda:0" in message and "activations" in message
    with pytest.raises(ValueError, match=r"train\.parallel='zero3'"):
        estimate_training_memory_bytes(1000, 2, 8, 2, 2, 4, "fp32", "zero3")


def test_cpu_memory_queries():
    cpu = torch.device("cpu")
    total = memory.device_memory_bytes(cpu)
    peak = memory.peak_memory_bytes(cpu)
    assert total is not None and total > 2**28
    assert peak is not None and 0 < peak < total
    memory.reset_peak_memory(cpu)  # no-op, must not fail
    devices.synchronize(cpu)
    assert devices.describe_device(cpu).startswith(f"cpu ({torch.get_num_threads()} threads, ")


# --- evaluate and downstream features on a requested device: tiny real artifacts ---------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    base = tmp_path_factory.mktemp("devices")
    rng = np.random.default_rng(2)
    motif = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    valid = [motif[: rng.integers(10, 33)] for _ in range(40)]
    fasta = base / "valid.fasta"
    fasta.write_text("".join(f">v{i}\n{s}\n" for i, s in enumerate(valid)))
    index_fasta(fasta)
    tokenize_shard(fasta, base / "valid", shard_index=0, num_shards=1)
    model = build_model(ModelShape(1, 16, 2), "mlm", 32, 0)
    model.save_pretrained(base / "model")
    done = {"n_params_non_embedding": 1, "num_tokens": 1, "flops": 1.0, "flops_budget": 1.0,
            "settings": {"shape": "L1_d16_h2"}}  # fmt: skip
    (base / "done.json").write_text(json.dumps(done))
    return base


def _evaluate(base, out, **kwargs):
    from plmscale.evaluate import evaluate_run

    return evaluate_run(
        base / "model", base / "done.json", [base / "valid"], out, objective="mlm", context=32,
        mask_ratio=0.15, max_tokens=1024, batch_rows=8, seed=3, **kwargs,
    )  # fmt: skip


def _no_work(*args, **kwargs):
    raise AssertionError("the model was loaded although the device is absent")


@no_accelerator
def test_evaluate_on_absent_gaudi_fails_before_any_work(artifacts, tmp_path, monkeypatch):
    import plmscale.evaluate

    monkeypatch.setattr(plmscale.evaluate, "load_model", _no_work)
    out = tmp_path / "eval.json"
    with pytest.raises(DeviceUnavailable, match=r"train.device='hpu'.*Gaudi"):
        _evaluate(artifacts, out, device="hpu")
    assert not out.exists()


def test_evaluate_bf16_on_cpu_matches_fp32(artifacts, tmp_path):
    fp32 = _evaluate(artifacts, tmp_path / "fp32.json", device="cpu", precision="fp32")
    bf16 = _evaluate(artifacts, tmp_path / "bf16.json", device="auto", precision="bf16")
    assert fp32["scored_tokens"] == bf16["scored_tokens"] > 0
    # bf16 matmuls (8-bit mantissa) on an untrained model (loss ~ ln 33 = 3.5 nats): within 0.02 nats
    assert abs(bf16["val_loss"] - fp32["val_loss"]) < 0.02
    assert bf16["val_loss"] != fp32["val_loss"]  # the bf16 path really ran (measured: |diff| ~ 3e-6 here)
    assert fp32["eval_precision"] == "fp32" and bf16["eval_precision"] == "bf16"
    assert bf16["eval_device"].startswith("cpu (")
    assert json.loads((tmp_path / "bf16.json").read_text()) == bf16


def test_downstream_features_in_bf16_on_cpu_match_fp32(artifacts):
    from plmscale.backbones import ModelSpec, load_backbone
    from plmscale.distributed import DistInfo
    from plmscale.finetune import Classifier, embed

    backbone = load_backbone(ModelSpec("run", "own", str(artifacts / "model"), objective="mlm"))
    rows = backbone.tokenize(["MKTAYIAKQRQISFVK", "LIVLLIVLAILLVIVALLIK"], 1024)
    model = Classifier(backbone, 2)
    cpu, one = torch.device("cpu"), DistInfo(0, 1, 0)
    fp32 = embed(model, rows, batch_size=2, device=cpu, precision="fp32", dist=one)
    bf16 = embed(model, rows, batch_size=2, device=cpu, precision="bf16", dist=one)
    assert fp32.dtype == bf16.dtype == torch.float32 and fp32.shape == bf16.shape == (2, 16)
    # LayerNorm-scaled hidden states are O(1); bf16 keeps ~3 significant digits
    assert 0 < (bf16 - fp32).abs().max() < 0.05
