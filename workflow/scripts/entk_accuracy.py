import torch

from rmtlens.inputs import pick_device
from rmtlens.io import save_json
from rmtlens.kernels import entk_accuracy
from rmtlens.workflow import entk_job_network, job_logger, set_torch_threads

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"entk_accuracy/{wc.dataset}/{wc.backbone}/{wc.weights}")
set_torch_threads(snakemake.threads)
device = pick_device()
model, images = entk_job_network(p, wc, snakemake.input, device)
record = entk_accuracy(model, images(0, p.probe_size), getattr(torch, p.entk["dtype"]), memory_gb=p.entk["memory_gb"],
                       device=device, allow_tf32=p.entk["allow_tf32"])
log.info("%s (%s weights) eNTK in %s on a %d-image probe: relative error %.3g (||ΔK||₂/λ_max %.3g, float64 "
         "accumulation bound %.3g, max|ΔK|/max|K| %.3g)", p.model, wc.weights, record["dtype"], record["probe_size"],
         record["relative_error"], record["spectral_difference"], record["accumulation_bound"],
         record["entrywise_difference"])
save_json(snakemake.output[0], record)
