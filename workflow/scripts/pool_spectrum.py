import numpy as np

from rmtlens.estimators import accuracy_floor, check_kernel, kernel_scale, label_projections
from rmtlens.inputs import PreparedDataset
from rmtlens.io import load_npy, load_npz, save_npz
from rmtlens.workflow import job_logger, kernel_relative_error

p = snakemake.params
log = job_logger(snakemake.log[0], "pool_spectrum")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
kernel = load_npy(snakemake.input.kernel)
check_kernel(kernel, dataset.n_pool)
n = dataset.n_pool
scale = kernel_scale(kernel[np.arange(n), np.arange(n)])
del kernel
pool = load_npz(snakemake.input.pool_eigh)  # pool_eigh: the pool block's decomposition, pool order
if not np.array_equal(pool["index"], np.arange(n)):
    raise ValueError(f"{snakemake.input.pool_eigh} is not the decomposition of the {n}-image pool in pool order")
eigvals = pool["eigvals"]
proj = label_projections(pool.pop("eigvecs"), dataset.outcomes[:n], len(dataset.classes))
relative_error = kernel_relative_error(snakemake.input.accuracy)
floor = accuracy_floor(eigvals, relative_error, p.accuracy["safety"], rcond=p.accuracy["rcond"])
log.info("pool spectrum: %d eigenvalues, largest %.3g, %d at or below the floor %.3g (%.3g of the largest)",
         eigvals.size, eigvals[0], int(np.sum(eigvals <= floor)), floor, floor / eigvals[0])
save_npz(snakemake.output[0], eigvals=eigvals, proj_onehot=proj, n_pool=n, floor=floor, scale=scale,
         relative_error=relative_error)
