"""Validation loss of a saved run, measured the same way for every run of an objective.

The model is loaded from its Hugging Face directory with ``AutoModelForMaskedLM`` (MLM) or
``AutoModelForCausalLM`` (CLM), exactly as a user would load it, and scored on the held-out clusters'
validation tokens (nats per scored token: every next token for CLM, the masked residues for MLM).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from plmscale.atomic import write_json_atomic
from plmscale.data import PackedStream, make_documents
from plmscale.train import open_tokens, validation_loss


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
) -> dict:
    torch.set_num_threads(threads)
    model = load_model(model_dir, objective)
    stream = PackedStream(make_documents(*open_tokens(valid_dirs), context), context, seed, drop_last=False)
    loss, n_scored = validation_loss(
        model, objective, stream, max_tokens=max_tokens, batch_rows=batch_rows, mask_ratio=mask_ratio,
        eval_seed=seed,
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
    }
    write_json_atomic(output, result)
    print(json.dumps(result))
    return result
