from rmtlens.io import load_npy, save_json, save_npy
from rmtlens.kernels import feature_kernel, feature_kernel_accuracy
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "kernel/features")
embeddings = load_npy(snakemake.input.embeddings)
K = feature_kernel(embeddings, snakemake.params.n_pool)
accuracy = feature_kernel_accuracy(embeddings, snakemake.params.n_pool)
log.info("feature kernel of shape %s; relative error bound %.3g (%s)", K.shape, accuracy["relative_error"],
         accuracy["method"])
save_npy(snakemake.output.kernel, K)
save_json(snakemake.output.accuracy, accuracy)
