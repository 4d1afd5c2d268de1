import torch

from rmtlens.inputs import (
    PreparedDataset,
    backbone_with_weights,
    feature_dim,
    normalisation,
    pick_device,
    preprocess,
)
from rmtlens.io import load_npz, save_json
from rmtlens.kernels import entk_accuracy, scalar_network
from rmtlens.workflow import job_logger, set_torch_threads

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"entk_accuracy/{wc.dataset}/{wc.backbone}/{wc.weights}")
set_torch_threads(snakemake.threads)
device = pick_device()
data = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
backbone = backbone_with_weights(
    wc.weights, p.model, p.image_size, p.seed, p.model_kwargs, cache_dir=p.hub_cache,
    pretrained_file=snakemake.input.get("pretrained_file"), trained_file=snakemake.input.get("trained"),
).to(device)
model = scalar_network(backbone, feature_dim(backbone, p.image_size), p.head_seed)
mean, std = normalisation(backbone)
x = preprocess(data.images[: p.probe_size], p.image_size, mean, std).to(device)
record = entk_accuracy(model, x, getattr(torch, p.entk["dtype"]), memory_gb=p.entk["memory_gb"], device=device,
                       allow_tf32=p.entk["allow_tf32"])
log.info("%s (%s weights) eNTK in %s on a %d-image probe: relative error %.3g (||ΔK||₂/λ_max %.3g, float64 "
         "accumulation bound %.3g, max|ΔK|/max|K| %.3g)", p.model, wc.weights, record["dtype"], record["probe_size"],
         record["relative_error"], record["spectral_difference"], record["accumulation_bound"],
         record["entrywise_difference"])
save_json(snakemake.output[0], record)
