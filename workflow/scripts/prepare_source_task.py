from rmtlens.inputs import open_source, prepare_source_task
from rmtlens.io import save_npz
from rmtlens.workflow import job_logger

wc, task = snakemake.wildcards, snakemake.params.task
log = job_logger(snakemake.log[0], f"prepare_source_task/{wc.task}")
ds = task["dataset_spec"]
archive = snakemake.input.archive[0] if snakemake.input.archive else None
source = open_source(ds, archive, snakemake.params.download_root)
result = prepare_source_task(
    source, ds["n_pool"], ds["n_test"], ds["seed"], task["n_train"], task["n_heldout"], task["classes"], task["seed"]
)
log.info("%d train + %d held-out images of classes %s, outside the pool and test set of %s",
         len(result.train_labels), len(result.heldout_labels), list(result.classes), task["dataset"])
save_npz(snakemake.output[0], train_images=result.train_images, train_labels=result.train_labels,
         heldout_images=result.heldout_images, heldout_labels=result.heldout_labels,
         train_index=result.train_index, heldout_index=result.heldout_index, classes=list(result.classes))
