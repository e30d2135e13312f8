"""The plmscale command line: help, version, one-line errors, `plmscale grid` against hand-worked numbers,
and readable model shapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from plmscale import __version__  # noqa: E402
from plmscale.cli import main  # noqa: E402
from plmscale.flops import ModelShape  # noqa: E402

# A one-shape, one-budget study on a user FASTA (merged over config/config.yaml like the workflow's).
TINY = """\
sources: {mine: {kind: fasta, path: mine.fasta}}
train: {context: 32, batch_rows: 8, min_steps: 5}
grid:
  objectives: [clm]
  shapes: {a: {layers: 1, width: 16, heads: 2}}
  budgets: [{flops: 1.0e+9, shapes: [a]}]
"""
# Hand-worked for shape a (d = 16, f = 4d = 64, L = 1, vocabulary V = 33; plmscale.flops):
#   per block 4(d^2 + d) + 4d + 2df + f + d = 1088 + 64 + 2048 + 64 + 16 = 3280
#   outside   2d + 2d + (d^2 + d) + 2d + V  = 32 + 32 + 272 + 32 + 33  = 401      -> N = 3,681
#   D = C / 6N = 1e9 / 22,086 = 45,277.55;  tokens/step = 32 x 8 = 256;  steps = ceil(176.87) = 177
#   D_trained = 177 x 256 = 45,312;  FLOPs/token = 6N + 12 L d T = 22,086 + 6,144 = 28,230
#   FLOPs = 28,230 x 45,312 = 1,279,157,760 -> at 1e9 FLOP/s x MFU 0.5: 2.5583 s
N_A, D_A, STEPS_A, TRAINED_A, FLOPS_A = 3681, 1e9 / 22086, 177, 45312, 28230 * 45312


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_is_plain_text_with_examples_and_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "``" not in text and ":func:" not in text
    assert "examples:" in text and "plmscale grid --configfile my.yaml --device h100" in text
    for command in ("grid", "summary", "runs", "plan"):
        assert f"\n    {command} " in text


def test_version_comes_from_the_package(capsys):
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = version("plmscale")
    except PackageNotFoundError:
        expected = __version__
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"plmscale {expected}\n"


def test_summary_of_a_file_that_is_not_a_summary_is_one_line_without_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    cmd = [sys.executable, "-m", "plmscale.cli", "summary", "README.md"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("plmscale summary: README.md is not a summary JSON (JSONDecodeError: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_summary_errors_name_the_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "summary", str(tmp_path / "none.json"))
    assert (
        code == 2
        and err
        == f"plmscale summary: no summary at {tmp_path / 'none.json'}: run the workflow first (make run)\n"
    )
    (tmp_path / "other.json").write_text('{"clm": {"n_runs": 3}}')
    code, _, err = run_cli(capsys, "summary", str(tmp_path / "other.json"))
    assert (
        code == 2
        and err
        == f"plmscale summary: {tmp_path / 'other.json'} is not a summary JSON (KeyError: 'best_run')\n"
    )


def test_model_shape_reads_as_words():
    assert str(ModelShape(layers=1, width=16, heads=2)) == f"1 layer x 16 wide, 2 heads (N={N_A:,})"
    assert str(ModelShape(layers=3, width=64, heads=4)).startswith("3 layers x 64 wide, 4 heads (N=")


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path


def grid_json(capsys, tiny, *extra):
    code, out, err = run_cli(
        capsys, "grid", "--configfile", str(tiny / "tiny.yaml"), "-d", str(tiny), "--json", *extra
    )
    assert code == 0, err
    return json.loads(out)


def test_grid_rows_match_hand_worked_numbers_with_token_manifests(capsys, tiny):
    # the data stage's token manifests: 10,000 + 2,000 training tokens in two shards
    for k, tokens in enumerate((10_000, 2_000)):
        shard = tiny / f"results/tokens/train/mine/shard{k}"
        shard.mkdir(parents=True)
        (shard / "manifest.json").write_text(json.dumps({"num_tokens": tokens, "num_shards": 2}))
    out = grid_json(capsys, tiny, "--peak-flops", "1e9", "--mfu", "0.5")
    (row,) = out["rows"]
    assert (row["run_id"], row["kind"], row["n_params"], row["num_steps"]) == (
        "clm/1e9/a",
        "isoflop",
        N_A,
        STEPS_A,
    )
    assert row["num_tokens"] == pytest.approx(D_A) and row["tokens_per_step"] == 256
    assert (row["trained_tokens"], row["flops"]) == (TRAINED_A, FLOPS_A)
    assert out["sources"]["mine"] == {"tokens": 12_000, "how": "token manifests"}
    assert row["epochs"]["mine"] == pytest.approx(45_312 / 12_000)  # 3.776 epochs
    assert out["seconds"]["device"] == [pytest.approx(2.55831552)]


def test_grid_estimates_tokens_from_the_fasta_and_warns_on_repeats(capsys, tiny):
    fasta = ">p1\n" + "M" * 996 + "\n"  # 1,001 bytes
    (tiny / "mine.fasta").write_text(fasta)
    out = grid_json(capsys, tiny)
    assert out["sources"]["mine"]["tokens"] == pytest.approx(0.9 * 1001)  # split.fractions.train of the bytes
    assert out["rows"][0]["epochs"]["mine"] == pytest.approx(45_312 / (0.9 * 1001))
    # the config's runtime assumptions: train.plan_peak_flops x train.expected_mfu
    assert out["devices"] == [
        {"name": "device", "peak_flops": 9.894e14, "mfu": 0.35, "source": "train.plan_peak_flops"}
    ]
    code, text, _ = run_cli(capsys, "grid", "--configfile", str(tiny / "tiny.yaml"), "-d", str(tiny))
    assert code == 0
    assert "warning: data repeats: 1 of 1 runs see source 'mine' more than once (up to 50.3 epochs" in text
    assert "clm/1e9/a  isoflop  3,681  45,278    177          256" in text


def test_grid_on_a_table_device_states_its_peak(capsys, tiny):
    out = grid_json(capsys, tiny, "--device", "a100", "--precision", "bf16", "--mfu", "0.4")
    assert out["devices"][0]["peak_flops"] == 312e12 and out["devices"][0]["mfu"] == 0.4
    assert out["seconds"]["a100"] == [pytest.approx(FLOPS_A / (312e12 * 0.4))]
    assert out["rows"][0]["epochs"] == {"mine": None}  # no manifests, no FASTA: unknown


def test_grid_config_errors_are_one_line(capsys, tiny):
    (tiny / "bad.yaml").write_text("train: {lr: abc}\n")
    code, _, err = run_cli(capsys, "grid", "--configfile", str(tiny / "bad.yaml"))
    assert code == 2
    assert (
        err == "plmscale grid: invalid configuration:\n  config key train.lr: 'abc' is not of type 'number'\n"
    )
    code, _, err = run_cli(capsys, "grid", "--configfile", str(tiny / "tiny.yaml"), "--device", "gaudi2")
    assert code == 2 and "no fp32 peak for Intel Gaudi 2" in err and "--precision bf16" in err
