"""Snakemake entry point: validate one source by the configured policy (see plmscale.validate)."""

import json

from plmscale.snake import logged
from plmscale.validate import ValidationPolicy, validate_fasta

with logged(snakemake.log[0]):
    p = snakemake.params
    policy = ValidationPolicy(
        uppercase=p.uppercase,
        strip_terminal_stop=p.strip_terminal_stop,
        min_length=p.min_length,
        max_length=p.max_length,
        on_invalid=p.on_invalid,
        report_examples=p.report_examples,
    )
    out = snakemake.output
    report = validate_fasta(
        snakemake.input[0], out.fasta, out.report, out.issues, policy, source=snakemake.wildcards.source
    )
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=2))
