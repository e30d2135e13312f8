"""Packing, masks, targets and the LR schedule (the trainer itself: tests/test_train.py)."""

import numpy as np
import pytest
import torch
from plmscale.data import (
    IGNORE_INDEX,
    PackedStream,
    attention_mask,
    clm_labels,
    make_batch,
    make_documents,
    mlm_inputs,
)
from plmscale.flops import ModelShape
from plmscale.model import POSITION_OFFSET, build_model
from plmscale.tokens import CLS_ID, EOS_ID, MASK_ID, encode
from plmscale.train import learning_rate
from plmscale.validation import eval_steps


def test_documents_window_long_sequences():
    ids, offsets = encode(["ACDEFGHIK", "LM"])  # 11 and 4 tokens
    docs = make_documents(ids, offsets, context=4)
    assert docs.starts.tolist() == [0, 4, 8, 11]
    assert docs.lengths.tolist() == [4, 4, 3, 4]
    assert docs.num_tokens == len(ids)


def test_stream_covers_every_token_once_per_epoch_and_is_deterministic():
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=rng.integers(3, 40))) for _ in range(50)]
    ids, offsets = encode(seqs)
    docs = make_documents(ids, offsets, context=16)
    stream = PackedStream(docs, 16, seed=5, drop_last=False)
    rows = stream.rows(0, stream.rows_per_epoch)
    real = rows.tokens[rows.segments >= 0]
    assert len(real) == len(ids)
    assert np.array_equal(np.sort(real), np.sort(ids.astype(np.int64)))
    again = PackedStream(docs, 16, seed=5, drop_last=False).rows(3, 2)
    assert np.array_equal(again.tokens, rows.tokens[3:5])
    other = PackedStream(docs, 16, seed=6, drop_last=False).rows(0, stream.rows_per_epoch)
    assert not np.array_equal(other.tokens, rows.tokens)


def test_positions_restart_at_each_document():
    ids, offsets = encode(["AC", "DEF"])  # 4 + 5 tokens in one row of 9
    stream = PackedStream(make_documents(ids, offsets, 9), 9, seed=0)
    tokens, positions, segments = stream.row(0)
    for seg in (0, 1):
        pos = positions[segments == seg]
        assert pos.tolist() == list(range(POSITION_OFFSET, POSITION_OFFSET + len(pos)))
        assert tokens[segments == seg][0] == CLS_ID


def test_clm_labels_hand_worked():
    tokens = np.array([[0, 5, 6, 2, 0, 7, 2, 1]])
    segments = np.array([[0, 0, 0, 0, 1, 1, 1, -1]])
    x = IGNORE_INDEX
    assert clm_labels(tokens, segments).tolist() == [[5, 6, 2, x, 7, 2, x, x]]


def test_mlm_masking_ratio_and_specials():
    tokens = np.tile(np.array([CLS_ID] + [5] * 198 + [EOS_ID]), (50, 1))
    inputs, labels = mlm_inputs(tokens, np.random.default_rng(0), 0.15)
    selected = labels != IGNORE_INDEX
    assert not selected[:, 0].any() and not selected[:, -1].any()
    assert selected.mean() == pytest.approx(0.15 * 198 / 200, abs=0.01)
    assert (inputs[selected] == MASK_ID).mean() == pytest.approx(0.8, abs=0.03)
    assert np.array_equal(inputs[~selected], tokens[~selected])


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_packed_rows_equal_each_sequence_alone(objective):
    ids, offsets = encode(["MKTAYIAKQRQISFVKSHFSRQ", "MEEPQSDPSVEPPLSQETF", "MALWMRLLPLLALLALWGPDPAAA"])
    stream = PackedStream(make_documents(ids, offsets, 64), 64, seed=0)
    rows = stream.rows(0, 1)
    model = build_model(ModelShape(2, 32, 2), objective, 64, seed=0).eval()
    batch = make_batch(rows, objective, np.random.default_rng(0), 0.15)
    with torch.no_grad():
        mask = attention_mask(batch.segments, objective == "clm")
        packed = model(input_ids=batch.input_ids, attention_mask=mask,
                       position_ids=batch.position_ids).logits[0]  # fmt: skip
        for seg in range(3):
            keep = torch.from_numpy(rows.segments[0] == seg)
            alone = model(
                input_ids=batch.input_ids[:, keep], position_ids=batch.position_ids[:, keep]
            ).logits[0]
            assert torch.allclose(packed[keep], alone, atol=1e-5)


def test_learning_rate_schedule_hand_worked():
    peak, total, warmup = 1e-3, 101, 10
    assert learning_rate(0, total, peak, warmup, 0.1) == pytest.approx(1e-4)
    assert learning_rate(9, total, peak, warmup, 0.1) == pytest.approx(1e-3)
    # halfway through the decay (45 of 90 decay steps) the cosine term is 0.5: 0.1 + 0.9 * 0.5 = 0.55
    assert learning_rate(55, total, peak, warmup, 0.1) == pytest.approx(0.55e-3)
    assert learning_rate(100, total, peak, warmup, 0.1) == pytest.approx(1e-4)


def test_eval_steps_are_log_spaced_and_end_at_the_last_step():
    assert eval_steps(100, 3) == [0, 9, 99]
    assert eval_steps(5, 1) == [4]
