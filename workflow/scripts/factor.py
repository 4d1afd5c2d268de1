from rmtlens.estimators import feature_factor, subsample_indices
from rmtlens.io import load_npy, save_npz
from rmtlens.workflow import job_logger

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"factor/{wc.kernel}/n{wc.n}_s{wc.seed}")
embeddings = load_npy(snakemake.input.embeddings)
index = subsample_indices(p.n_pool, int(wc.n), int(wc.seed))
eigvals, basis, method = feature_factor(embeddings[index])
log.info("n=%s, p=%d: %s (%s), %d eigenvalues from %.3g to %.3g", wc.n, embeddings.shape[1], method,
         "low-rank, thin SVD of the embedding rows" if method == "svd" else "dense eigh of the n x n block",
         eigvals.size, eigvals[-1], eigvals[0])
save_npz(snakemake.output[0], index=index, eigvals=eigvals, eigvecs=basis)
