"""Bounded memory: validate, pool, split and tokenize at 10x input peak within a small margin of 1x.

Each stage runs in a fresh interpreter with the same imports (plmscale.databench), so the difference
of peak resident memory between the two sizes is what the stage holds per record.  Sizes: 20 MB and
200 MB of FASTA (uncompressed), about 70k and 700k proteins: an implementation that kept the records, the
IDs or the issues would grow by hundreds of MB at 10x; a streamed one stays flat once its buffers (Arrow's
memory pool, Python's allocator arenas) are warm, which 20 MB is enough for (bench/bench_data.py).
"""

from __future__ import annotations

import pytest
from plmscale.databench import pipeline, real_proteins

RATIO = 1.3  # the target; measured ~1.0-1.1 at these sizes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    proteins = real_proteins()
    base = tmp_path_factory.mktemp("memory")
    return {
        factor: pipeline(base / f"x{factor}", factor * 20_000_000, proteins, shards=2) for factor in (1, 10)
    }


def test_every_data_stage_peaks_within_the_margin_at_10x(runs):
    small = {run.stage: run for run in runs[1]}
    lines = []
    for run in runs[10]:
        base = small[run.stage]
        ratio = run.peak_rss_bytes / base.peak_rss_bytes
        lines.append(
            f"{run.stage}: {base.peak_rss_bytes / 2**20:.0f} -> {run.peak_rss_bytes / 2**20:.0f} MB peak "
            f"({ratio:.2f}x) for {base.input_bytes / 1e6:.0f} -> {run.input_bytes / 1e6:.0f} MB in"
        )
        assert ratio <= RATIO, "\n".join(lines)
    print("\n".join(lines))


def test_the_stages_processed_ten_times_the_records(runs):
    small, large = ({run.stage: run.result for run in runs[f]} for f in (1, 10))
    assert large["validate"]["kept"] >= 9.5 * small["validate"]["kept"]
    assert large["validate"]["changed"] >= 9.5 * small["validate"]["changed"] > 0  # lowercased copies
    assert sum(large["split"].values()) == large["validate"]["kept"]
    assert large["tokenize"]["tokens"] >= 9 * small["tokenize"]["tokens"]
