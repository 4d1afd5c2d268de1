from rmtlens.inputs import (
    PreparedDataset,
    backbone_with_weights,
    embed_images,
    pick_device,
)
from rmtlens.io import load_npz, save_npy
from rmtlens.workflow import Progress, job_logger, set_torch_threads

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"embed/{wc.dataset}/{wc.backbone}/{wc.weights}")
set_torch_threads(snakemake.threads)
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
device = pick_device()
model = backbone_with_weights(
    wc.weights, p.model, p.image_size, p.seed, p.model_kwargs, cache_dir=p.hub_cache,
    pretrained_file=snakemake.input.get("pretrained_file"), trained_file=snakemake.input.get("trained"),
)
log.info("%s (%s weights, %d parameters) on %s", p.model, wc.weights, sum(t.numel() for t in model.parameters()), device)
features = embed_images(
    model, dataset.images, p.image_size, p.batch_size, device,
    progress=Progress(log, len(dataset.images), "images embedded"),
)
log.info("embeddings of shape %s", features.shape)
save_npy(snakemake.output[0], features)
