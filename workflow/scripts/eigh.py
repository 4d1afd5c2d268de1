from rmtlens.estimators import subsample_indices
from rmtlens.io import save_npz
from rmtlens.workflow import job_logger, kernel_block_eigh, permuted_pool_eigh

wc, n_pool = snakemake.wildcards, snakemake.params.n_pool
log = job_logger(snakemake.log[0], f"eigh/{wc.kernel}/n{wc.n}_s{wc.seed}")
index = subsample_indices(n_pool, int(wc.n), int(wc.seed))
if hasattr(snakemake.input, "pool_eigh"):  # n = N_pool: a permutation of the pool
    eigvals, eigvecs = permuted_pool_eigh(snakemake.input.pool_eigh, index)
    log.info("n=%s = N_pool: the pool's eigendecomposition, rows permuted to seed %s's order", wc.n, wc.seed)
else:
    eigvals, eigvecs, driver = kernel_block_eigh(snakemake.input.kernel, n_pool, index)
    log.info("n=%s: float64 eigh (driver %s)", wc.n, driver)
log.info("n=%s: eigenvalues from %.3g to %.3g", wc.n, eigvals[-1], eigvals[0])
save_npz(snakemake.output[0], index=index, eigvals=eigvals, eigvecs=eigvecs)
