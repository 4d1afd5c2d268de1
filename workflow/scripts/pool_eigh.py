import numpy as np

from rmtlens.io import save_npz
from rmtlens.workflow import job_logger, kernel_block_eigh

wc, n_pool = snakemake.wildcards, snakemake.params.n_pool
log = job_logger(snakemake.log[0], f"pool_eigh/{wc.kernel}")
index = np.arange(n_pool)
eigvals, eigvecs, driver = kernel_block_eigh(snakemake.input.kernel, n_pool, index)
log.info("pool block (N_pool=%d): float64 eigh (driver %s), eigenvalues from %.3g to %.3g",
         n_pool, driver, eigvals[-1], eigvals[0])
save_npz(snakemake.output[0], index=index, eigvals=eigvals, eigvecs=eigvecs)
