# Shared helpers: config validation at parse time, the training grid, paths and code digests.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # the package, also without `pip install`

from plmscale.config import check_data_config, load_study, validate_config
from plmscale import provenance
from plmscale.provenance import code_digest
from plmscale.split import SPLITS

validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
check_data_config(config)
STUDY = load_study(config)
POINTS = STUDY.points()
SOURCES = sorted(config["sources"])
ACTIVE_SPLITS = [s for s in SPLITS if config["split"]["fractions"].get(s, 0) > 0]
SHARDS = range(config["tokenize"]["shards"])
SCRIPTS_DIR = Path(workflow.basedir) / "scripts"


def script_code(script):
    """Digest of the package code scripts/<script>.py runs, imports followed (plmscale.provenance): an edit
    to a module reruns the rules that import it, directly or not, and no others."""
    return provenance.script_code(script, SCRIPTS_DIR)


wildcard_constraints:
    objective="clm|mlm",
    budget=r"[0-9.]+e[0-9]+",
    shape=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    source=r"[A-Za-z0-9_]+",
    split="train|valid|test",
    shard=r"[0-9]+",


def source_fasta(wildcards):
    spec = config["sources"][wildcards.source]
    folder = spec["kind"] if spec["kind"] in ("embedded", "mmseqs_db", "subtract") else "download"
    return f"resources/{folder}/{wildcards.source}.fasta"


def token_dirs(split, sources=None):
    """The token shard directories of a split (all sources, in sorted source order, or ``sources``)."""
    return [f"results/tokens/{split}/{source}/shard{k}" for source in sources or SOURCES for k in SHARDS]


def token_manifests(split):
    return [f"{d}/manifest.json" for d in token_dirs(split)]


def token_files(split):
    return [f"{d}/{name}" for d in token_dirs(split) for name in ("ids.npy", "offsets.npy", "manifest.json")]


def split_fastas(split):
    """The FASTA files of one split, one per source, in sorted source order."""
    return [f"results/split/{split}/{source}.fasta" for source in SOURCES]


def run_dir(point):
    return f"results/runs/{point.run_id}"


def run_file(point, name):
    return f"{run_dir(point)}/{name}"


def eval_file(point):
    return f"results/eval/{point.run_id}.json"


def points_of(objective):
    """The IsoFLOP runs of an objective (every replicate): the scaling laws are fitted to these."""
    return [p for p in STUDY.isoflop_points() if p.objective == objective]


def point_of(wildcards):
    return STUDY.point(wildcards.objective, wildcards.budget, wildcards.shape)


def mask_ratio(wildcards):
    return config["train"]["mlm"]["mask_ratio"] if wildcards.objective == "mlm" else 0.0


FIGURES = ("isoflop", "optimal_allocation", "loss_vs_compute", "learning_curves")


def final_outputs():
    out = []
    for objective in STUDY.objectives:
        out.append(f"results/fits/{objective}.json")
        out += [f"results/figures/{objective}_{fig}.{ext}" for fig in FIGURES for ext in ("png", "svg")]
    if downstream_enabled():
        out += ["results/downstream/results.csv", "results/figures/downstream_compute.png"]
    out += hwbench_outputs()
    out += law_outputs()
    out.append("results/summary.json")
    return out
