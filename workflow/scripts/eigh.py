from rmtlens.estimators import subsample_indices
from rmtlens.io import save_npz
from rmtlens.workflow import job_logger, kernel_block_eigh, permuted_pool_eigh

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"eigh/{wc.kernel}/n{wc.n}")
for i, (seed, output) in enumerate(zip(p.seeds, snakemake.output, strict=True)):  # one file per seed
    index = subsample_indices(p.n_pool, int(wc.n), int(seed))
    if hasattr(snakemake.input, "pool_eigh"):  # n = N_pool: a permutation of the pool
        eigvals, eigvecs = permuted_pool_eigh(snakemake.input.pool_eigh, index)
        log.info("n=%s = N_pool, seed %d: the pool's eigendecomposition, rows permuted", wc.n, seed)
    else:
        eigvals, eigvecs, driver = kernel_block_eigh(snakemake.input.kernel, p.n_pool, index, check=i == 0)
        log.info("n=%s, seed %d: float64 eigh (driver %s)", wc.n, seed, driver)
    log.info("n=%s, seed %d: eigenvalues from %.3g to %.3g", wc.n, seed, eigvals[-1], eigvals[0])
    save_npz(output, index=index, eigvals=eigvals, eigvecs=eigvecs)
    del eigvals, eigvecs  # one seed's decomposition in memory at a time (eigh_job_bytes)
