import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rmtlens.data import PreparedDataset
from rmtlens.io import load_npy, load_npz, save_figure, save_table
from rmtlens.plots import double_descent_curves
from rmtlens.random_features import expected_kernel, linear_ridge_sweep, random_features_sweep, standardise_inputs
from rmtlens.runlog import job_logger, set_torch_threads
from rmtlens.tables import double_descent_summary
from rmtlens.targets import make_targets

p, spec = snakemake.params, snakemake.params.spec
log = job_logger(snakemake.log[0], "double_descent")
set_torch_threads(snakemake.threads)
data = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
N = data.n_pool
Y = make_targets(data.labels, len(data.classes), p.targets["kind"], p.targets["positive_classes"])
raw = data.images if spec["inputs"] == "pixels" else load_npy(snakemake.input.rf)
x = standardise_inputs(raw, N)
ratios = np.geomspace(spec["ratios"]["min"], spec["ratios"]["max"], spec["ratios"]["num"])
parts = []
for activation in spec["activations"]:
    scale = float(np.mean(np.diag(expected_kernel(x[:N], activation=activation))))
    rows = random_features_sweep(x[:N], Y[:N], x[N:], Y[N:], [spec["n"]], ratios, spec["seeds"],
                                 spec["ridge_rel"] * scale, activation, p.rcond)
    parts.append(pd.DataFrame(rows).assign(model=f"random features ({activation})", sweep="N_rf / n"))
    log.info("random features (%s): %d fits", activation, len(rows["seed"]))
features = load_npy(snakemake.input.linear).astype(np.float64)
n_dim = features.shape[1]
top = spec["linear"]["ratios"]["max"] or N / n_dim
lin_ratios = np.geomspace(spec["linear"]["ratios"]["min"], min(top, N / n_dim), spec["linear"]["ratios"]["num"])
lin_scale = float(np.mean(np.sum(features[:N] ** 2, axis=1)) / n_dim)
rows = linear_ridge_sweep(features[:N], Y[:N], features[N:], Y[N:], lin_ratios, spec["seeds"],
                          spec["ridge_rel"] * lin_scale, p.rcond)
parts.append(pd.DataFrame(rows).rename(columns={"p": "n_features"})
             .assign(model=f"linear ridge ({spec['linear']['embedding']})", sweep="n / p"))
table = pd.concat(parts, ignore_index=True)
summary = double_descent_summary(table)
log.info("double descent summary\n%s", summary.to_string(index=False))
save_table(snakemake.output.table, table)
save_table(snakemake.output.summary, summary)
fig = double_descent_curves(table)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
