"""Attention backends over packed rows (plmscale.attention): every backend computes each document alone."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from plmscale.attention import (
    ATTENTION_BACKENDS,
    HF_IMPLEMENTATIONS,
    check_backend,
    forward_kwargs,
    hf_attn_implementation,
    kernel_name,
    set_backend,
)
from plmscale.data import Batch, PackedStream, Rows, make_batch, make_documents
from plmscale.flops import ModelShape
from plmscale.model import build_model
from plmscale.tokens import PAD_ID, encode
from torch.nn.attention.flex_attention import create_mask
from transformers import PreTrainedModel

CONTEXT = 64
SHAPE = ModelShape(2, 32, 2)
PROTEINS = [
    "MKTAYIAKQRQISFVKSHFSRQ",
    "MEEPQSDPSVEPPLSQETF",
    "MALWMRLLPLLALLALWGPDPAAA",
    "MKV",
    "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEG",  # > CONTEXT: 2 windows
    "MGDVEKGKKIFVQKCAQCHTVEKGGKHKTGPNLHGLFGRKTGQAPGYSYTAANKNKGIIW",
    "MDSKGSSQKGSRLLLLLVVSNLLLCQGVVS",
]


@pytest.fixture(scope="module")
def rows() -> Rows:
    """All rows of one epoch: rows of several documents, one document split across rows, and a last row
    with trailing padding (``drop_last=False``)."""
    ids, offsets = encode(PROTEINS)
    stream = PackedStream(make_documents(ids, offsets, CONTEXT), CONTEXT, seed=0, drop_last=False)
    packed = stream.rows(0, stream.rows_per_epoch)
    assert (packed.segments[-1] == -1).any(), "the last row must end in padding"
    assert (packed.segments.max(axis=1) >= 2).any(), "some row must hold three or more documents"
    return packed


def _batch(rows: Rows, objective: str) -> Batch:
    """Inputs and targets of ``rows`` for ``objective`` (fixed MLM masking seed)."""
    return make_batch(rows, objective, np.random.default_rng(0), 0.15)


def _logits(model: PreTrainedModel, batch: Batch, backend: str, objective: str) -> torch.Tensor:
    """Logits of a packed batch with the forward kwargs of ``backend``."""
    kwargs = forward_kwargs(batch.segments, causal=objective == "clm", backend=backend)
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids, **kwargs).logits


@pytest.mark.parametrize("objective", ["mlm", "clm"])
@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_packed_logits_equal_each_sequence_alone(rows, backend, objective):
    """Packed logits equal the dense-mask reference (padding included) and each (row, document) run alone."""
    model = build_model(SHAPE, objective, CONTEXT, seed=0).eval()
    batch = _batch(rows, objective)
    with torch.no_grad():
        reference = _logits(model, batch, "sdpa", objective)  # dense mask, padding included
        set_backend(model, backend)
        assert model.config._attn_implementation == hf_attn_implementation(backend)
        packed = _logits(model, batch, backend, objective)
        assert torch.isfinite(packed).all()
        torch.testing.assert_close(packed, reference, atol=1e-5, rtol=0)
        set_backend(model, "sdpa")
        pieces = {(r, int(s)) for r, row in enumerate(rows.segments) for s in row if s >= 0}
        assert len(pieces) > len(PROTEINS)  # a document continues in the next row
        for r, s in pieces:
            keep = torch.from_numpy(rows.segments[r] == s)
            alone = model(
                input_ids=batch.input_ids[r : r + 1, keep], position_ids=batch.position_ids[r : r + 1, keep]
            ).logits[0]
            torch.testing.assert_close(packed[r, keep], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["flex", "varlen"])
def test_plain_hf_calls_on_a_switched_model_fall_back_to_sdpa(backend):
    """Without forward_kwargs (evaluation code, a 2D padding mask) a flex/varlen model is HF's SDPA model."""
    ids, offsets = encode(PROTEINS[:2])
    lengths = np.diff(offsets)
    input_ids = torch.full((2, int(lengths.max())), PAD_ID)
    padding = torch.zeros_like(input_ids)
    for i, (start, n) in enumerate(zip(offsets[:-1], lengths, strict=True)):
        input_ids[i, :n] = torch.from_numpy(ids[start : start + n].astype(np.int64))
        padding[i, :n] = 1
    for objective in ("mlm", "clm"):
        model = build_model(SHAPE, objective, CONTEXT, seed=0).eval()
        with torch.no_grad():
            reference = model(input_ids=input_ids, attention_mask=padding).logits
            set_backend(model, backend)
            switched = model(input_ids=input_ids, attention_mask=padding).logits
            single = model(input_ids=input_ids[:1]).logits
        real = padding.bool()
        torch.testing.assert_close(switched[real], reference[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(single, reference[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_varlen_gradients_equal_sdpa_gradients(rows, objective):
    """Backward through the whole model on packed rows: varlen parameter grads equal sdpa's (fp32)."""
    batch = _batch(rows, objective)
    grads = {}
    for backend in ("sdpa", "varlen"):
        model = build_model(SHAPE, objective, CONTEXT, seed=0, attention=backend).train()
        check_backend(backend, torch.device("cpu"), training=True)
        kwargs = forward_kwargs(batch.segments, causal=objective == "clm", backend=backend)
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, labels=batch.labels, **kwargs)
        out.loss.backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["sdpa"].keys() == grads["varlen"].keys()
    assert any(n.endswith("attention.self.query.weight") for n in grads["sdpa"])
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads["varlen"][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def _fake_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, window_size):
    """Stand-in for torch.nn.attention.varlen.varlen_attn (CUDA-only) that enforces the flash contract."""
    assert q.ndim == 3 and q.shape[-1] % 8 == 0 and q.is_contiguous(), q.shape
    assert cu_q.dtype == cu_k.dtype == torch.int32 and torch.equal(cu_q, cu_k)
    assert isinstance(max_q, int) and max_q == max_k == int(cu_q.diff().max())
    assert window_size in ((-1, -1), (-1, 0))
    causal = window_size == (-1, 0)
    lengths = cu_q.diff().tolist()
    outs = [
        torch.nn.functional.scaled_dot_product_attention(
            a.transpose(0, 1), b.transpose(0, 1), c.transpose(0, 1), is_causal=causal, scale=scale
        ).transpose(0, 1)
        for a, b, c in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
    ]
    return torch.cat(outs)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_flash_varlen_glue_with_a_contract_checking_kernel(rows, objective, monkeypatch):
    """The CUDA path (layout, int32 offsets, causal window, head_dim 12 padded to 16) against sdpa, on CPU
    with a stand-in kernel; the real varlen_attn raises NotImplementedError off CUDA."""
    import plmscale.attention as attn

    monkeypatch.setattr(attn, "varlen_attn", _fake_varlen_attn)
    monkeypatch.setattr(attn, "_flash_varlen_available", lambda device, dtype: True)
    model = build_model(ModelShape(2, 48, 4), objective, CONTEXT, seed=0).train()  # head_dim 12
    batch = _batch(rows, objective)
    reference = _logits(model, batch, "sdpa", objective)
    set_backend(model, "varlen")
    flash = _logits(model, batch, "varlen", objective)
    torch.testing.assert_close(flash, reference, atol=1e-5, rtol=0)
    reference.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    flash.sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_varlen_metadata_hand_worked():
    """Document offsets by hand (row starts, segment changes, padding runs); BlockMask == dense mask."""
    segments = torch.tensor([[0, 0, 1, 1, 1, -1], [0, 0, 0, 0, 0, 0], [0, 1, 2, -1, -1, -1]])
    kwargs = forward_kwargs(segments, causal=True, backend="varlen")
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 2, 5, 6, 12, 13, 14, 15, 18]
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32
    assert kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"]
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 6
    assert "attention_mask" not in kwargs
    for causal in (False, True):
        dense = forward_kwargs(segments, causal=causal, backend="sdpa")["attention_mask"]
        assert dense.shape == (3, 1, 6, 6) and dense.dtype == torch.bool
        block = forward_kwargs(segments, causal=causal, backend="flex")["attention_mask"]
        assert tuple(block.shape) == (3, 1, 6, 6)
        assert torch.equal(create_mask(block.mask_mod, 3, 1, 6, 6, device="cpu"), dense)


def test_flex_training_on_cpu_fails_early_and_in_the_forward(rows):
    """check_backend names the setting and the fix; a differentiable flex forward on CPU raises the same."""
    with pytest.raises(ValueError, match=r"train\.attention='flex'.*'varlen'.*'sdpa'"):
        check_backend("flex", torch.device("cpu"), training=True)
    with pytest.raises(ValueError, match=r"train\.attention='flex' is not supported on device 'hpu'"):
        check_backend("flex", torch.device("hpu"), training=False)
    check_backend("flex", torch.device("cpu"), training=False)
    check_backend("flex", torch.device("cuda"), training=True)
    check_backend("varlen", torch.device("cpu"), training=True)
    model = build_model(SHAPE, "mlm", CONTEXT, seed=0, attention="flex").train()
    batch = _batch(rows, "mlm")
    with pytest.raises(ValueError, match="cannot train on cpu"):
        _logits(model, batch, "flex", "mlm")


def test_unknown_backend_names_the_allowed_values():
    """Every entry point rejects an unknown name with the allowed values."""
    allowed = r"\('sdpa', 'flex', 'varlen'\)"
    for call in (
        lambda: check_backend("flash", torch.device("cpu"), training=False),
        lambda: hf_attn_implementation("flash"),
        lambda: forward_kwargs(torch.zeros(1, 4, dtype=torch.int64), causal=False, backend="flash"),
        lambda: kernel_name("flash", torch.device("cpu")),
        lambda: build_model(SHAPE, "mlm", CONTEXT, seed=0, attention="flash"),
    ):
        with pytest.raises(ValueError, match=rf"train\.attention='flash'.*{allowed}"):
            call()


def test_kernel_names_per_device_and_dtype():
    """The kernel reported for the log follows device and dtype (flash varlen only for CUDA fp16/bf16)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "dense" in kernel_name("sdpa", cpu)
    assert "eager" in kernel_name("flex", cpu) and "torch.compile" in kernel_name("flex", cuda)
    assert "varlen_attn" in kernel_name("varlen", cuda, dtype=torch.bfloat16)
    for device, dtype in ((cuda, torch.float32), (cpu, torch.bfloat16), (torch.device("hpu"), torch.float32)):
        assert "per-document" in kernel_name("varlen", device, dtype=dtype)
    assert hf_attn_implementation("sdpa") == "sdpa"
    assert {hf_attn_implementation(b) for b in ATTENTION_BACKENDS} == set(HF_IMPLEMENTATIONS.values())


_RELOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
out = {}
for objective, auto in (("mlm", AutoModelForMaskedLM), ("clm", AutoModelForCausalLM)):
    model = auto.from_pretrained(sys.argv[1] + "/" + objective).eval()
    ids = torch.tensor([json.loads(sys.argv[2])])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.tolist()
    out[objective] = {"impl": model.config._attn_implementation, "logits": logits}
assert not any(name.startswith("plmscale") for name in sys.modules), "plmscale was imported"
print(json.dumps(out))
"""


def test_varlen_model_saves_a_plain_hf_checkpoint(tmp_path):
    """A varlen model saves a checkpoint that a fresh process loads with the Auto classes (no plmscale) and
    that gives the sdpa logits."""
    ids, _ = encode([PROTEINS[0]])
    input_ids = torch.from_numpy(ids.astype(np.int64))[None]
    segments = torch.zeros_like(input_ids)
    expected = {}
    for objective in ("mlm", "clm"):
        model = build_model(SHAPE, objective, CONTEXT, seed=0, attention="varlen").eval()
        with torch.no_grad():
            varlen = model(input_ids=input_ids, **forward_kwargs(segments, causal=False, backend="varlen"))
            set_backend(model, "sdpa")
            expected[objective] = model(input_ids=input_ids).logits[0]
            torch.testing.assert_close(varlen.logits[0], expected[objective], atol=1e-5, rtol=0)
            set_backend(model, "varlen")
        model.save_pretrained(tmp_path / objective)
        assert "plmscale" not in (tmp_path / objective / "config.json").read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(tmp_path), json.dumps(input_ids[0].tolist())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for objective, logits in expected.items():
        assert reloaded[objective]["impl"] == "sdpa"
        torch.testing.assert_close(torch.tensor(reloaded[objective]["logits"][0]), logits, atol=1e-5, rtol=0)
