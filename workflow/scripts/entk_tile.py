import time

import numpy as np
import torch

from rmtlens.inputs import pick_device
from rmtlens.io import fault_checkpoint, load_npz, save_npy
from rmtlens.kernels import entk
from rmtlens.workflow import Progress, entk_job_network, job_logger, set_torch_threads

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"entk_tile/{wc.dataset}/{wc.backbone}/{wc.weights}/r{wc.row}_c{wc.col}")
set_torch_threads(snakemake.threads)
device = pick_device()
model, images = entk_job_network(p, wc, snakemake.input, device)
(r0, r1), (c0, c1) = p.tile["rows"], p.tile["cols"]
x_rows = images(r0, r1)
x_cols = None if (r0, r1) == (c0, c1) else images(c0, c1)
log.info("%s (%s weights) eNTK rows %d:%d x cols %d:%d on %s, %s", p.model, wc.weights, r0, r1, c0, c1,
         device, p.entk["dtype"])
counter = Progress(log, 100, "percent of the tile's flops", interval=15)
flops = {}


def progress(done, total):
    flops["total"] = total
    percent = int(100 * done / max(total, 1))
    if percent > counter.done:
        counter(percent - counter.done)
    if done >= total / 2:
        fault_checkpoint(f"entk_tile:{snakemake.output[0]}")


start = time.perf_counter()
K = entk(model, x_rows, x_cols, memory_gb=p.entk["memory_gb"], dtype=getattr(torch, p.entk["dtype"]),
         device=device, allow_tf32=p.entk["allow_tf32"], progress=progress)
seconds = time.perf_counter() - start
log.info("tile of %d x %d: %.6g flops (the engine's schedule: gradient pass and contraction) in %.1f s, "
         "%.1f GFLOP/s", r1 - r0, c1 - c0, flops.get("total", float("nan")), seconds,
         flops.get("total", float("nan")) / seconds / 1e9)
if not np.all(np.isfinite(K)):
    raise FloatingPointError("eNTK tile has NaN or infinite entries")
save_npy(snakemake.output[0], K)
