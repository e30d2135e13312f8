"""Validation loss measured the same way for every run of an objective, in training and in ``evaluate``."""

from __future__ import annotations

import numpy as np
import torch

from plmscale import attention, devices
from plmscale.data import Batch, PackedStream, Rows, make_batch, mlm_inputs
from plmscale.steps import masked_lm_loss_sum, to_device

EVAL_STREAM = 2  # rng stream tag of the validation masks (training masks use plmscale.steps.TRAIN_STREAM)


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Log-spaced steps (0-based, after the update) at which validation loss is measured; always the last."""
    if points <= 1:
        return [total_steps - 1]
    marks = np.unique(np.round(np.geomspace(1, total_steps, num=points)).astype(int)) - 1
    return sorted({*marks.tolist(), total_steps - 1})


def eval_batch(rows: Rows, objective: str, mask_ratio: float, eval_seed: int, first_row: int) -> Batch:
    """Inputs and targets of validation rows ``first_row, first_row + 1, ...``; an MLM row's mask is drawn
    from its own generator ``(eval_seed, EVAL_STREAM, row)``, so it does not depend on the batching."""
    if objective != "mlm":
        return make_batch(rows, objective, np.random.default_rng(eval_seed), mask_ratio)
    pairs = [
        mlm_inputs(rows.tokens[i : i + 1], np.random.default_rng([eval_seed, EVAL_STREAM, first_row + i]),
                   mask_ratio)
        for i in range(rows.tokens.shape[0])
    ]  # fmt: skip
    inputs, labels = (np.concatenate(part) for part in zip(*pairs, strict=True))
    return Batch(
        input_ids=torch.from_numpy(inputs),
        position_ids=torch.from_numpy(rows.positions),
        segments=torch.from_numpy(rows.segments),
        labels=torch.from_numpy(labels),
    )


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    objective: str,
    stream: PackedStream,
    *,
    max_tokens: int,
    batch_rows: int,
    mask_ratio: float,
    eval_seed: int,
    attention_backend: str = "sdpa",
    precision: str = "fp32",
) -> tuple[float, int]:
    """Mean loss in nats per scored token over the first ``max_tokens`` of a validation stream.

    The rows, and for MLM the masked positions, depend only on ``eval_seed`` and the row index (not on
    ``batch_rows``), so every run of an objective is scored on exactly the same tokens, whatever the
    device, batch, precision or attention kernel (which change the result only by rounding).
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    n_rows = max(1, min(stream.rows_per_epoch, max_tokens // stream.context))
    total, count = 0.0, 0
    for first in range(0, n_rows, batch_rows):
        rows = stream.rows(first, min(batch_rows, n_rows - first))
        batch = to_device(eval_batch(rows, objective, mask_ratio, eval_seed, first), device)
        extra = attention.forward_kwargs(batch.segments, causal=objective == "clm", backend=attention_backend)
        with devices.autocast(device, precision):
            out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, **extra)
        loss_sum, n = masked_lm_loss_sum(out.logits, batch.labels)
        total += float(loss_sum)
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("validation set produced no scored tokens; enlarge the validation split")
    return total / count, count
