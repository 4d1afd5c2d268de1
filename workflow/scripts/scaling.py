import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import resolved_rows, scaling_laws
from rmtlens.studies import scaling_table
from rmtlens.workflow import job_logger

p = snakemake.params
log = job_logger(snakemake.log[0], "scaling")
joined, left_out = resolved_rows(load_table(snakemake.input.joined))
log.info("%d rows left out: not resolved (SPEC §2)", left_out)
fits = load_table(snakemake.input.fits)
predictions = pd.concat([load_table(f) for f in snakemake.input.predictions], ignore_index=True)
table = scaling_table(joined, fits, predictions, p.lambdas_rel, p.n_window["min"], p.n_window["max"])
log.info("scaling exponents\n%s", table.to_string(index=False))
save_table(snakemake.output.table, table)
fig = scaling_laws(joined, table, p.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
