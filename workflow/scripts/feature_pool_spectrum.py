from rmtlens.estimators import feature_pool_spectrum
from rmtlens.inputs import PreparedDataset
from rmtlens.io import load_npy, load_npz, save_npz
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "pool_spectrum/features")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
embeddings = load_npy(snakemake.input.embeddings)
eigvals, proj, method = feature_pool_spectrum(embeddings[: dataset.n_pool], dataset.labels[: dataset.n_pool],
                                              len(dataset.classes), snakemake.params.rcond)
log.info("pool spectrum of N_pool = %d, p = %d: %s path, largest eigenvalue %.3g", dataset.n_pool,
         embeddings.shape[1], "p x p Gram (low-rank)" if method == "gram" else "dense N_pool x N_pool eigh",
         eigvals[0])
save_npz(snakemake.output[0], eigvals=eigvals, proj_onehot=proj, n_pool=dataset.n_pool)
