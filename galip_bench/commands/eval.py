"""`galip-bench eval --checkpoint PATH --data CONFIG --protocols a,b`: evaluate any checkpoint (ours or official).
`--nproc N` shares the evaluation between N local processes (gloo on the CPU; NCCL on GPUs, process r on cuda:r):
each generates a share of every plan's batches, process 0 merges and computes the metrics, and the records are
the ones one process gives (evaluation.driver)."""
import json
import os
import pickle
import socket
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from galip_bench.commands.options import (add_model_source_arguments, add_plan_arguments, announce, eval_config,
                                          model_source, protocol_list)
from galip_bench.config.io import read_data_section
from galip_bench.config.site import load_site
from galip_bench.data import split_size
from galip_bench.devices import check_device, resolve_device
from galip_bench.errors import UserError
from galip_bench.evaluation.evaluate import prepare_evaluation, run_evaluation
from galip_bench.evaluation.gate import keep_beside
from galip_bench.evaluation.planning import build_protocols, evaluation_timeout
from galip_bench.files import atomic_write_json, check_output_dir, check_output_file
from galip_bench import distributed


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="galip-bench checkpoint or official GALIP .pth")
    p.add_argument("--data", required=True, help="YAML with a `data:` section (the evaluation captions/references)")
    p.add_argument("--protocols", default="fid_galip,clip_score_galip", help="comma-separated protocol names")
    add_plan_arguments(p)
    p.add_argument("--nproc", type=int, default=1,
                   help="local processes sharing the evaluation (CPU: gloo; GPUs: process r on cuda:r); the "
                        "numbers equal one process's")
    p.add_argument("--out", help="write the JSON records here")
    p.add_argument("--save-images", metavar="DIR", help="also write the generated images as PNGs")
    add_model_source_arguments(p)


def check_outputs(args) -> None:
    """The device and every output path, before anything is read or generated."""
    check_device(args.device, "--device")
    if getattr(args, "out", None):
        check_output_file(args.out, "--out")
    if getattr(args, "save_images", None):
        check_output_dir(args.save_images, "--save-images")


def run(args) -> int:
    check_outputs(args)
    eval_cfg = eval_config(args, protocol_list(args.protocols))
    data_cfg, site = read_data_section(args.data), load_site(args.bench)
    if args.nproc == 1:
        prepared = prepare_evaluation(args.checkpoint, data_cfg, eval_cfg, site, save_images=args.save_images,
                                      announce=announce, **model_source(args))
        records, kept = run_evaluation(prepared), prepared.evaluator.kept_samples
    else:
        records, kept = evaluate_sharded(args.nproc, args.checkpoint, data_cfg, eval_cfg, site,
                                         save_images=args.save_images, **model_source(args))
    if args.out:  # the per-sample data beside the records (OUT.samples/), for `regress --records` to pair
        records = keep_beside(records, kept, args.out) if kept else records
        atomic_write_json(args.out, records)
    table = pd.DataFrame([{"protocol": r["protocol"], "metric": r["metric"], "value": r["value"],
                           "samples": r.get("num_samples"), "error": r.get("error", "")} for r in records])
    print(table.to_string(index=False))
    if args.out:
        print(f"wrote {len(records)} record(s) to {args.out}")
    else:
        print(json.dumps(records[0]["settings"], indent=1) if records else "")
    failed = sorted({r["protocol"] for r in records if r.get("error")})
    if failed:
        print(f"{len(failed)} protocol(s) failed: {', '.join(failed)} (their records say why)", file=sys.stderr)
        return 1
    return 0


def check_nproc(nproc: int, eval_cfg, data_cfg, device: torch.device) -> None:
    """Refuse a process count the evaluation cannot use: more than a plan's batches of 64 (or than the GPUs)."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    if device.type == "cuda":
        if device.index is not None:
            raise UserError(f"--nproc {nproc} runs process r on cuda:r; --device {device} names one GPU "
                            "(use --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if nproc > torch.cuda.device_count():
            raise UserError(f"--nproc {nproc} needs {nproc} GPUs (one per process); {torch.cuda.device_count()} "
                            "are visible")
    protos = [p for p in build_protocols(eval_cfg, data_cfg.kind if data_cfg else "synthetic") if p.kind != "speed"]
    if not protos:
        raise UserError(f"--nproc {nproc}: the speed protocol runs on one process; there is nothing to share")
    n_img = split_size(data_cfg, "test")
    for p in protos:
        n = p.plan.count(n_img) if n_img is not None else None
        if n is None:  # an `all` plan: its N is known once the captions are read (the processes then still agree)
            continue
        batches = -(-n // p.plan.batch)
        if nproc > batches:
            raise UserError(f"--nproc {nproc}: {p.name}'s plan has {n:,} samples, {batches} batch(es) of "
                            f"{p.plan.batch}, which the processes share whole: use at most {batches} processes")


def evaluate_sharded(nproc: int, checkpoint, data_cfg, eval_cfg, site, **kwargs) -> tuple:
    """`evaluate_checkpoint` on `nproc` local processes: process 0's (records, kept samples). A user error on any
    process is raised here (the processes first agree that every one could load and plan, so none waits for
    another)."""
    device = resolve_device(kwargs.pop("device", "auto"))
    check_nproc(nproc, eval_cfg, data_cfg, device)
    timeout = evaluation_timeout(eval_cfg, data_cfg, device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="galip-eval-") as tmp:
        job = dict(checkpoint=checkpoint, data_cfg=data_cfg, eval_cfg=eval_cfg, site=site, kwargs=kwargs)
        torch.multiprocessing.spawn(_worker, args=(nproc, port, device.type, timeout, tmp, job), nprocs=nproc,
                                    join=True)
        for rank in range(nproc):
            error = Path(tmp) / f"error{rank}.txt"
            if error.exists():
                raise UserError(error.read_text())
        out = pickle.loads((Path(tmp) / "records.pkl").read_bytes())
        return out["records"], out["kept"]


def _worker(rank, nproc, port, device_type, timeout, tmp, job):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if device_type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    distributed.init(device, timeout=timeout)
    try:
        try:
            prepared, error = prepare_evaluation(job["checkpoint"], job["data_cfg"], job["eval_cfg"], job["site"],
                                                 device=str(device), progress=rank == 0,
                                                 announce=announce if rank == 0 else None, **job["kwargs"]), None
        except UserError as err:
            prepared, error = None, str(err)
        if error is not None:
            (Path(tmp) / f"error{rank}.txt").write_text(error)
        if distributed.all_reduce(torch.tensor([float(error is not None)], dtype=torch.float64), "max").item():
            return  # some process cannot evaluate: none starts
        records = run_evaluation(prepared)
        if rank == 0:
            (Path(tmp) / "records.pkl").write_bytes(pickle.dumps({"records": records,
                                                                  "kept": prepared.evaluator.kept_samples}))
    finally:
        distributed.shutdown()
