import numpy as np

from rmtlens.estimators import accuracy_floor, feature_pool_spectrum, kernel_scale
from rmtlens.inputs import PreparedDataset
from rmtlens.io import load_npy, load_npz, save_npz
from rmtlens.workflow import job_logger, kernel_relative_error

p = snakemake.params
log = job_logger(snakemake.log[0], "pool_spectrum/features")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
embeddings = load_npy(snakemake.input.embeddings)
n = dataset.n_pool
pool = np.asarray(embeddings[:n], dtype=np.float64)
relative_error = kernel_relative_error(snakemake.input.accuracy)
safety, rcond = p.accuracy["safety"], p.accuracy["rcond"]
eigvals, proj, method = feature_pool_spectrum(pool, dataset.outcomes[:n], len(dataset.classes), rcond,
                                              relative_error, safety)
floor = accuracy_floor(eigvals, relative_error, safety, rcond=rcond)
scale = kernel_scale(np.einsum("ij,ij->i", pool, pool) / pool.shape[1])  # tr(K_pool)/N_pool = ||Φ_pool||²_F/(p·N_pool)
log.info("pool spectrum of N_pool = %d, p = %d: %s path, largest eigenvalue %.3g, %d non-zero at or below the "
         "floor %.3g (%.3g of the largest)", n, pool.shape[1],
         "p x p Gram (low-rank)" if method == "gram" else "dense N_pool x N_pool eigh", eigvals[0],
         int(np.sum((eigvals != 0) & (eigvals <= floor))), floor, floor / eigvals[0])
save_npz(snakemake.output[0], eigvals=eigvals, proj_onehot=proj, n_pool=n, floor=floor, scale=scale,
         relative_error=relative_error)
