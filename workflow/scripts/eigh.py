from rmtlens.estimators import (
    check_kernel,
    eigh_descending,
    kernel_train_block,
    subsample_indices,
)
from rmtlens.io import load_npy, save_npz
from rmtlens.workflow import job_logger

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"eigh/{wc.kernel}/n{wc.n}")
kernel = load_npy(snakemake.input.kernel)
check_kernel(kernel, p.n_pool)
for seed, output in zip(p.seeds, snakemake.output, strict=True):  # one file per seed
    index = subsample_indices(p.n_pool, int(wc.n), int(seed))
    eigvals, eigvecs = eigh_descending(kernel_train_block(kernel, p.n_pool, index))
    log.info("n=%s, seed %d: eigenvalues from %.3g to %.3g", wc.n, seed, eigvals[-1], eigvals[0])
    save_npz(output, index=index, eigvals=eigvals, eigvecs=eigvecs)
