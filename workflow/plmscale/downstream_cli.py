"""Command line of the downstream and hardware-benchmark jobs, run under the trainer's launcher.

    python -m plmscale.downstream_cli finetune --job JOB.json
    python -m plmscale.downstream_cli hwbench-infer --job JOB.json
    torchrun --standalone --nproc_per_node=4 -m plmscale.downstream_cli hwbench-finetune --job JOB.json

``--job`` is a JSON object (inline or ``@path``) written by the Snakemake rule: the model, the settings,
the converted data set(s) and the outputs (``finetune``: a list of ``tasks``, one per data set, each with
``dataset``, ``data``, ``n_classes``, ``output`` and ``head``), and the device.  Every rank computes;
rank 0 writes the outputs, atomically.  The device is resolved before any work: an absent GPU or Gaudi
fails the job with the host, what was found and the fix (:func:`plmscale.devices.resolve_device`); it never
runs on the CPU instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.backbones import ModelSpec, load_backbone
from plmscale.devices import check_precision, describe_device, distributed_backend, resolve_device
from plmscale.distributed import DistInfo, dist_info_from_env, distributed
from plmscale.downstream_results import FinetuneResult
from plmscale.finetune import FinetuneSettings, Split, split_from_table, train_classifier


def _job(text: str) -> dict[str, Any]:
    return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)


def _setup(job: dict[str, Any]) -> tuple[torch.device, DistInfo, str]:
    dist = dist_info_from_env()
    if job.get("threads"):
        torch.set_num_threads(max(1, int(job["threads"]) // dist.world_size))
    device = resolve_device(job["device"], dist.local_rank, log=print if dist.rank == 0 else None)
    check_precision(device, job["precision"])
    backend = distributed_backend(
        device, world_size=dist.world_size, rank=dist.rank, local_rank=dist.local_rank
    )
    return device, dist, backend


def _splits(job: dict[str, Any], names: tuple[str, ...], limits: dict[str, Any]) -> dict[str, Split]:
    table = pl.read_parquet(job["data"])
    return {name: split_from_table(table, name, limit=limits.get(name)) for name in names}


def run_finetune(job: dict[str, Any]) -> None:
    """One model and method, one classifier per task (data set).  The backbone is loaded once for a frozen
    backbone; full fine-tuning changes it, so each further data set starts again from the checkpoint."""
    device, dist, backend = _setup(job)
    spec = ModelSpec.from_dict(job["model"])
    settings = FinetuneSettings.from_dict(job["settings"])
    log = print if dist.rank == 0 else (lambda _m: None)
    with distributed(dist, backend):
        backbone = None
        for task in job["tasks"]:
            log(f"== {spec.name} · {task['dataset']} · {settings.method}")
            splits = _splits(task, ("train", "valid", "test"), job.get("limits") or {})
            t0 = time.perf_counter()
            if backbone is None or settings.method == "full":
                backbone = load_backbone(spec)
            outcome = train_classifier(
                backbone, splits, int(task["n_classes"]), settings,
                device=device, precision=job["precision"], dist=dist, log=log,
            )  # fmt: skip
            if dist.rank != 0:
                continue
            result = FinetuneResult(
                model=spec,
                dataset=task["dataset"],
                method=settings.method,
                n_classes=int(task["n_classes"]),
                n_train=len(splits["train"].labels),
                n_valid=len(splits["valid"].labels),
                n_test=len(splits["test"].labels),
                metrics=outcome.metrics,
                history=tuple(outcome.history),
                settings=settings,
                device=describe_device(device),
                precision=job["precision"],
                world_size=dist.world_size,
                wall_s=time.perf_counter() - t0,
            )
            with atomic_path(task["head"]) as tmp:
                torch.save(outcome.head_state, tmp)
            write_json_atomic(task["output"], result.to_dict())
            print(json.dumps(outcome.metrics, indent=1))


def run_hwbench_infer(job: dict[str, Any]) -> None:
    from plmscale.hwbench import inference_benchmark

    device, _dist, _backend = _setup(job)
    spec = ModelSpec.from_dict(job["model"])
    split = _splits(job, ("test",), job.get("limits") or {})["test"]
    head = torch.load(job["head"], weights_only=True) if job.get("head") else None
    rows = inference_benchmark(
        load_backbone(spec),
        split,
        int(job["n_classes"]),
        head_state=head,
        device=device,
        precision=job["precision"],
        max_length=int(job["max_length"]),
        warmup=int(job["warmup"]),
        paddings=tuple(job["paddings"]),
        compile_model=bool(job.get("compile")),
        hpu_graphs=bool(job.get("hpu_graphs")),
    )
    for row in rows:
        row.update(model=spec.name, dataset=job["dataset"])
    write_json_atomic(job["output"], {"rows": rows})
    print(json.dumps(rows, indent=1))


def run_hwbench_finetune(job: dict[str, Any]) -> None:
    from plmscale.hwbench import finetune_benchmark

    device, dist, backend = _setup(job)
    if dist.world_size != int(job["n_devices"]):
        raise RuntimeError(
            f"the job asks for {job['n_devices']} processes but the launcher started {dist.world_size}: "
            "check hwbench.launcher (it must start {devices} processes)"
        )
    spec = ModelSpec.from_dict(job["model"])
    settings = FinetuneSettings.from_dict(job["settings"])
    splits = _splits(job, ("train",), job.get("limits") or {})
    with distributed(dist, backend):
        row = finetune_benchmark(
            load_backbone(spec),
            splits,
            int(job["n_classes"]),
            settings,
            epochs=int(job["epochs"]),
            device=device,
            precision=job["precision"],
            dist=dist,
        )
    if dist.rank == 0:
        row.update(model=spec.name, dataset=job["dataset"])
        write_json_atomic(job["output"], row)
        print(json.dumps(row, indent=1))


COMMANDS = {
    "finetune": run_finetune,
    "hwbench-infer": run_hwbench_infer,
    "hwbench-finetune": run_hwbench_finetune,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m plmscale.downstream_cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--job", required=True, help="the job as JSON, or @file")
    parser.add_argument(
        "--execution", help="execution settings as JSON (device, precision): override the job's"
    )
    parser.add_argument("--threads", type=int, help="the job's CPU threads, shared by its processes")
    args = parser.parse_args(argv)
    job = _job(args.job)
    if args.execution:
        job.update(json.loads(args.execution))
    if args.threads:
        job["threads"] = args.threads
    COMMANDS[args.command](job)


if __name__ == "__main__":
    main()
