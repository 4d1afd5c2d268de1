from rmtlens.estimators import feature_factor, subsample_indices
from rmtlens.io import load_npy, save_npz
from rmtlens.workflow import job_logger

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"factor/{wc.kernel}/n{wc.n}")
embeddings = load_npy(snakemake.input.embeddings)
for seed, output in zip(p.seeds, snakemake.output, strict=True):  # one file per seed
    index = subsample_indices(p.n_pool, int(wc.n), int(seed))
    eigvals, basis, method = feature_factor(embeddings[index])
    log.info("n=%s, p=%d: %s (%s), seed %d: %d eigenvalues from %.3g to %.3g", wc.n, embeddings.shape[1], method,
             "low-rank, thin SVD of the embedding rows" if method == "svd" else "dense eigh of the n x n block",
             seed, eigvals.size, eigvals[-1], eigvals[0])
    save_npz(output, index=index, eigvals=eigvals, eigvecs=basis)
