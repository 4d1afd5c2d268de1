from rmtlens.estimators import check_kernel, pool_spectrum
from rmtlens.inputs import PreparedDataset
from rmtlens.io import load_npy, load_npz, save_npz
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "pool_spectrum")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
kernel = load_npy(snakemake.input.kernel)
check_kernel(kernel, dataset.n_pool)
eigvals, proj = pool_spectrum(kernel[: dataset.n_pool], dataset.labels[: dataset.n_pool], len(dataset.classes))
log.info("pool spectrum: %d eigenvalues, largest %.3g", eigvals.size, eigvals[0])
save_npz(snakemake.output[0], eigvals=eigvals, proj_onehot=proj, n_pool=dataset.n_pool)
