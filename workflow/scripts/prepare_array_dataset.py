from rmtlens.inputs import prepare_array_dataset
from rmtlens.io import save_npz
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], f"prepare_array_dataset/{snakemake.wildcards.dataset}")
split = snakemake.input.get("split")
dataset = prepare_array_dataset(snakemake.params.spec, snakemake.input.outcome, split)
log.info(
    "pool %d + test %d of the %d samples in %s (%s split); %s",
    dataset.n_pool, dataset.n_test, dataset.file_row_count, snakemake.input.outcome, "given" if split else "seeded",
    f"{dataset.values.shape[1]} real-valued target columns" if dataset.regression else f"{len(dataset.classes)} classes",
)
save_npz(snakemake.output[0], **dataset.to_arrays())
