"""Packing, masks, targets, the LR schedule and a real (tiny) training run with HF reload."""

import json

import numpy as np
import polars as pl
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
from plmscale.tokens import CLS_ID, EOS_ID, MASK_ID, encode, tokenize_shard
from plmscale.train import TrainSettings, eval_steps, learning_rate, train_run
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM


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


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(1)
    motif = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    train = [motif[: rng.integers(10, 33)] for _ in range(400)]
    valid = [motif[: rng.integers(10, 33)] for _ in range(40)]
    for name, seqs in (("train", train), ("valid", valid)):
        fasta = base / f"{name}.fasta"
        fasta.write_text("".join(f">{name}{i}\n{s}\n" for i, s in enumerate(seqs)))
        tokenize_shard(fasta, base / name, shard_index=0, num_shards=1)
    return base / "train", base / "valid"


def _settings(objective, **overrides):
    values = dict(
        objective=objective, shape=ModelShape(1, 32, 2), flops_budget=3e9, context=32, batch_rows=8,
        peak_lr=5e-3, warmup_fraction=0.1, min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95,
        grad_clip=1.0, mask_ratio=0.15, seed=0, eval_points=4, eval_max_tokens=1024, eval_seed=3,
    )  # fmt: skip
    values.update(overrides)
    return TrainSettings(**values)


@pytest.mark.parametrize(
    ("objective", "auto"), [("clm", AutoModelForCausalLM), ("mlm", AutoModelForMaskedLM)]
)
def test_training_run_learns_and_saves_a_loadable_hf_model(tmp_path, shards, objective, auto):
    settings = _settings(objective)
    out = tmp_path / "run"
    done = train_run(settings, [shards[0]], [shards[1]], model_dir=out / "model",
                     metrics_path=tmp_path / "metrics.parquet", done_path=tmp_path / "done.json")  # fmt: skip
    # D = 3e9 / (6 * 13985) = 35,753.5 tokens; / 256 tokens per step = 139.7 -> 140 steps
    assert done["num_steps"] == settings.num_steps == 140
    metrics = pl.read_parquet(tmp_path / "metrics.parquet")
    assert metrics.height == done["num_steps"]
    val = metrics["val_loss"].drop_nulls()
    assert val.len() == len(eval_steps(done["num_steps"], 4))
    assert val[-1] < val[0] - 0.5  # a repeated motif is learnable: loss must fall well below the start
    assert json.loads((tmp_path / "done.json").read_text())["final_val_loss"] == val[-1]
    reloaded = auto.from_pretrained(out / "model")
    assert type(reloaded).__name__.endswith("ForCausalLM" if objective == "clm" else "ForMaskedLM")
    assert (out / "model" / "vocab.txt").is_file()


def test_training_is_deterministic(tmp_path, shards):
    runs = []
    for k in range(2):
        settings = _settings("mlm", flops_budget=5e8)
        train_run(settings, [shards[0]], [shards[1]], model_dir=tmp_path / f"m{k}",
                  metrics_path=tmp_path / f"{k}.parquet", done_path=tmp_path / f"{k}.json")  # fmt: skip
        runs.append(pl.read_parquet(tmp_path / f"{k}.parquet")["train_loss"].to_list())
    assert runs[0] == runs[1]
