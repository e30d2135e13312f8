"""What each rule of the workflow declares (threads, resources, conda env, kind of job), read from the parsed
workflow through Snakemake's API in a subprocess (the API changes directory; no job is planned or run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_DUMP = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

repo = Path(sys.argv[1])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
        snakefile=repo / "Snakefile", workdir=repo,
    )._workflow
    rules = {}
    for rule in workflow.rules:
        rules[rule.name] = {
            "resources": sorted(k for k in rule.resources if not k.startswith("_") and k != "tmpdir"),
            "conda": str(rule.conda_env) if rule.conda_env else None,
            "script": rule.script,
            "shell": rule.shellcmd,
            "run": bool(rule.run_func) and not (rule.shellcmd or rule.script or rule.wrapper),
            "has_output": bool(rule.output),
            "local": rule.name in workflow._localrules,  # localrule: True (not is_local(): no executor)
            "snakefile": rule.snakefile,
        }
print("RULES-JSON " + json.dumps(rules))
"""


@dataclass(frozen=True)
class RuleDecl:
    """One rule's declarations: resource names, conda env, how it runs."""

    name: str
    resources: tuple[str, ...]
    conda: str | None
    script: str | None
    shell: str | None
    run: bool
    has_output: bool
    local: bool
    snakefile: str

    @property
    def is_job(self) -> bool:
        """A rule that becomes a scheduled job (aggregate rules without outputs never do)."""
        return self.has_output and not self.local


def declared_rules() -> dict[str, RuleDecl]:
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP, str(REPO)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RULES-JSON ")), None)
    assert proc.returncode == 0 and line, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {
        name: RuleDecl(name=name, **{**d, "resources": tuple(d["resources"])})
        for name, d in json.loads(line.removeprefix("RULES-JSON ")).items()
    }


def planned_resources(output: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job of a dry run (localrules print as `rule` too)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        w = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        r = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        resources = dict(kv.split("=", 1) for kv in r.group(1).split(", ")) if r else {}
        jobs.append((m.group(1), wildcards, resources))
    return jobs
