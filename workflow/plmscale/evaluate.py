"""Validation loss of a saved run, measured the same way for every run of an objective.

The model is loaded from its Hugging Face directory with ``AutoModelForMaskedLM`` (MLM) or
``AutoModelForCausalLM`` (CLM), exactly as a user would load it, and scored on the held-out clusters'
validation tokens (nats per scored token: every next token for CLM, the masked residues for MLM).

It runs on the device its job reserved (``device``: auto|cpu|cuda|hpu, see ``plmscale.devices``; an absent
device is an error before any work, never a silent CPU fallback) in ``precision`` fp32 or bf16 (autocast;
the loss itself is summed in fp32).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from plmscale.atomic import write_json_atomic
from plmscale.data import PackedStream
from plmscale.devices import check_precision, describe_device, resolve_device
from plmscale.tokens import open_stores, store_identity
from plmscale.validation import validation_loss


def load_model(model_dir: str | Path, objective: str) -> torch.nn.Module:
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    return auto.from_pretrained(model_dir, attn_implementation="sdpa")


def evaluate_run(
    model_dir: str | Path,
    done_json: str | Path,
    valid_dirs: list[str | Path],
    output: str | Path,
    *,
    objective: str,
    context: int,
    mask_ratio: float,
    max_tokens: int,
    batch_rows: int,
    seed: int,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Score the saved model of ``model_dir``; writes and returns the result (``val_loss`` in nats)."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)  # before any work: a missing GPU/Gaudi fails here
    check_precision(dev, precision)
    model = load_model(model_dir, objective).to(dev)
    stores = open_stores(valid_dirs, checksum=True)  # contents verified once per job, in place
    stream = PackedStream.from_stores(stores, context, seed, drop_last=False)
    loss, n_scored = validation_loss(
        model, objective, stream, max_tokens=max_tokens, batch_rows=batch_rows, mask_ratio=mask_ratio,
        eval_seed=seed, precision=precision,
    )  # fmt: skip
    done = json.loads(Path(done_json).read_text())
    result = {
        "objective": objective,
        "val_loss": loss,
        "scored_tokens": n_scored,
        "n_params_non_embedding": done["n_params_non_embedding"],
        "num_tokens": done["num_tokens"],
        "flops": done["flops"],
        "flops_budget": done["flops_budget"],
        "shape": done["settings"]["shape"],
        "eval_precision": precision,
        "eval_device": describe_device(dev),
        "valid_tokens": store_identity(stores),  # manifest sha256 of each shard scored
    }
    write_json_atomic(output, result)
    print(json.dumps(result))
    return result
