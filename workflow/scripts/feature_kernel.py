from rmtlens.io import load_npy, save_npy
from rmtlens.kernels import feature_kernel
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "kernel/features")
K = feature_kernel(load_npy(snakemake.input.embeddings), snakemake.params.n_pool)
log.info("feature kernel of shape %s", K.shape)
save_npy(snakemake.output.kernel, K)
