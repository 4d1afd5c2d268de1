from rmtlens.inputs import prepare_dataset
from rmtlens.io import save_npz
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], f"prepare_dataset/{snakemake.wildcards.dataset}")
archive = snakemake.input.archive[0] if snakemake.input.archive else None
dataset = prepare_dataset(snakemake.params.spec, archive, snakemake.params.download_root)
log.info(
    "pool %d + test %d images of shape %s, %d classes",
    dataset.n_pool, dataset.n_test, dataset.images.shape[1:], len(dataset.classes),
)
save_npz(snakemake.output[0], **dataset.to_arrays())
