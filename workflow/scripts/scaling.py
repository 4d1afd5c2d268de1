import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.grids import nearest_on_grid
from rmtlens.io import load_table, save_figure, save_table
from rmtlens.plots import scaling_laws
from rmtlens.runlog import job_logger
from rmtlens.scaling import scaling_rows
from rmtlens.tables import KERNEL_KEYS

p = snakemake.params
log = job_logger(snakemake.log[0], "scaling")
joined = load_table(snakemake.input.joined)
fits = pd.concat([load_table(f) for f in snakemake.input.fits], ignore_index=True).set_index(KERNEL_KEYS)
rows = []
for keys, group in joined.groupby(KERNEL_KEYS, sort=True):
    lambdas = nearest_on_grid(group["lambda_rel"].unique(), p.lambdas_rel)
    fit = fits.loc[keys]
    for row in scaling_rows(group, lambdas, p.n_window["min"], p.n_window["max"]):
        rows.append({**dict(zip(KERNEL_KEYS, keys)), "alpha": fit["alpha"], "delta": fit["delta"],
                     "powerlaw_rate": fit["rate"], **row})
table = pd.DataFrame(rows)
log.info("scaling exponents\n%s", table.to_string(index=False))
save_table(snakemake.output.table, table)
fig = scaling_laws(joined, table, p.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
