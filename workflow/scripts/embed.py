from rmtlens.backbones import create_backbone, pick_device
from rmtlens.data import PreparedDataset
from rmtlens.embeddings import embed_images
from rmtlens.io import load_npz, save_npy
from rmtlens.runlog import Progress, job_logger, set_torch_threads

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"embed/{wc.dataset}/{wc.backbone}/{wc.weights}")
set_torch_threads(snakemake.threads)
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
device = pick_device()
model = create_backbone(p.model, p.image_size, p.seed, p.model_kwargs)
log.info("%s (%s weights, %d parameters) on %s", p.model, wc.weights, sum(t.numel() for t in model.parameters()), device)
features = embed_images(
    model, dataset.images, p.image_size, p.batch_size, device,
    progress=Progress(log, len(dataset.images), "images embedded"),
)
log.info("embeddings of shape %s", features.shape)
save_npy(snakemake.output[0], features)
