from rmtlens.inputs import PreparedDataset, import_representation
from rmtlens.io import load_npz, save_npy
from rmtlens.workflow import job_logger

wc = snakemake.wildcards
log = job_logger(snakemake.log[0], f"representation_file/{wc.dataset}/{wc.backbone}")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
features = import_representation(snakemake.input.embeddings, snakemake.params.spec, dataset)
log.info("%s: %d of its %d rows (pool %d, then test %d), p = %d, stored as %s", snakemake.input.embeddings,
         features.shape[0], dataset.file_row_count, dataset.n_pool, dataset.n_test, features.shape[1], features.dtype)
save_npy(snakemake.output[0], features)
