import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import power_law_fits_figure
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "power_laws")
fits = pd.concat([load_table(f) for f in snakemake.input.fits], ignore_index=True)
curves = pd.concat([load_table(f) for f in snakemake.input.curves], ignore_index=True)
invalid = fits[~fits["valid"].astype(bool)]
log.info("%d of %d fits (kernel x window) are not valid; no rate comes from them\n%s", len(invalid), len(fits),
         invalid[["backbone", "weights", "kernel", "window", "reason"]].to_string(index=False))
save_table(snakemake.output.table, fits)
fig = power_law_fits_figure(curves, fits, snakemake.params.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
