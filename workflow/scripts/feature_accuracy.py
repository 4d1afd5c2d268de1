from rmtlens.io import load_npy, save_json
from rmtlens.kernels import feature_kernel_accuracy
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "feature_accuracy")
accuracy = feature_kernel_accuracy(load_npy(snakemake.input.embeddings), snakemake.params.n_pool)
log.info("feature kernel (p = %d, N_pool = %d): relative error bound %.3g (%s), from the embeddings",
         accuracy["p"], accuracy["n_pool"], accuracy["relative_error"], accuracy["method"])
save_json(snakemake.output[0], accuracy)
