import numpy as np

from rmtlens.data import PreparedDataset
from rmtlens.grids import kernel_scale
from rmtlens.io import load_npy, load_npz, save_table
from rmtlens.ridge import ridge_path
from rmtlens.runlog import job_logger
from rmtlens.spectra import train_test_blocks
from rmtlens.tables import ridge_table
from rmtlens.targets import make_targets

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"ridge_path/{wc.backbone}/{wc.weights}/{wc.kernel}/n{wc.n}_s{wc.seed}")
dataset = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
eig = load_npz(snakemake.input.eigh)
kernel = load_npy(snakemake.input.kernel)
n_pool, index = dataset.n_pool, eig["index"]
targets = make_targets(dataset.labels, len(dataset.classes), p.targets["kind"], p.targets["positive_classes"])
scale = kernel_scale(kernel[np.arange(n_pool), np.arange(n_pool)])
_, k_test = train_test_blocks(kernel, n_pool, index)
lambdas_rel = np.asarray(p.lambdas_rel)
path = ridge_path(
    eig["eigvals"], eig["eigvecs"], targets[index], k_test, targets[n_pool:], lambdas_rel * scale, rcond=p.rcond
)
meta = dict(
    dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel,
    n=int(wc.n), seed=int(wc.seed), n_test=dataset.n_test, n_classes=targets.shape[1], kernel_scale=scale,
)
table = ridge_table(path, lambdas_rel, meta)
best = table.loc[table["test_risk"].idxmin()]
log.info("%d ridges; best test risk %.4g (error %.3f) at λ/s = %.2g", len(table), best.test_risk, best.test_error, best.lambda_rel)
save_table(snakemake.output[0], table)
