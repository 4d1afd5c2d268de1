import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.estimators import KERNEL_KEYS
from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import learning_dynamics_curves
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "learning_dynamics_summary")
table = pd.concat([load_table(f) for f in snakemake.input], ignore_index=True)
summary_columns = [c for c in table.columns if c.startswith("summary_")]
summary = table.groupby(KERNEL_KEYS, sort=True)[["n", *summary_columns]].first().reset_index()
summary.columns = [c.removeprefix("summary_") for c in summary.columns]
log.info("learning dynamics\n%s", summary.to_string(index=False))
save_table(snakemake.output.table, table.drop(columns=summary_columns))
save_table(snakemake.output.summary, summary)
fig = learning_dynamics_curves(table, snakemake.params.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
