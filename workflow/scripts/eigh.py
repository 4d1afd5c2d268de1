from rmtlens.estimators import (
    check_kernel,
    eigh_descending,
    kernel_train_block,
    subsample_indices,
)
from rmtlens.io import load_npy, save_npz
from rmtlens.workflow import job_logger

wc = snakemake.wildcards
log = job_logger(snakemake.log[0], f"eigh/{wc.kernel}/n{wc.n}_s{wc.seed}")
kernel = load_npy(snakemake.input.kernel)
check_kernel(kernel, snakemake.params.n_pool)
index = subsample_indices(snakemake.params.n_pool, int(wc.n), int(wc.seed))
eigvals, eigvecs = eigh_descending(kernel_train_block(kernel, snakemake.params.n_pool, index))
log.info("n=%s: eigenvalues from %.3g to %.3g", wc.n, eigvals[-1], eigvals[0])
save_npz(snakemake.output[0], index=index, eigvals=eigvals, eigvecs=eigvecs)
