import numpy as np
import pandas as pd

from rmtlens.data import PreparedDataset
from rmtlens.dynamics import gradient_flow_path, time_grid
from rmtlens.grids import kernel_scale
from rmtlens.io import load_npy, load_npz, save_table
from rmtlens.runlog import job_logger
from rmtlens.spectra import train_test_blocks
from rmtlens.targets import make_targets

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"learning_dynamics/{wc.backbone}/{wc.weights}/{wc.kernel}")
data = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
eig = load_npz(snakemake.input.eigh)
kernel = load_npy(snakemake.input.kernel)
N, index = data.n_pool, eig["index"]
Y = make_targets(data.labels, len(data.classes), p.targets["kind"], p.targets["positive_classes"])
scale = kernel_scale(kernel[np.arange(N), np.arange(N)])
times = time_grid(scale, p.ridge["min"], p.ridge["max"], p.spec["num_times"], p.spec["learning_rate"])
_, k_test = train_test_blocks(kernel, N, index)
table, summary = gradient_flow_path(eig["eigvals"], eig["eigvecs"], Y[index], k_test, Y[N:], times,
                                    p.spec["learning_rate"], p.ridge["rcond"])
log.info("n = %d: %s", len(index), {k: round(v, 4) for k, v in summary.items()})
frame = pd.DataFrame(table).assign(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel,
                                   n=len(index), kernel_scale=scale, **{f"summary_{k}": v for k, v in summary.items()})
save_table(snakemake.output[0], frame)
