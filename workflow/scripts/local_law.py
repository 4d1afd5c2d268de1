import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.plots import local_law_deviations
from rmtlens.runlog import job_logger
from rmtlens.scaling import local_law_diagnostic
from rmtlens.tables import KERNEL_KEYS

log = job_logger(snakemake.log[0], "local_law")
joined = load_table(snakemake.input.joined)
positive = joined[joined["lambda_rel"] > 0]
parts = []
for keys, group in positive.groupby(KERNEL_KEYS, sort=True):
    predictions = group[["n", "lambda", "lambda_over_kappa"]].drop_duplicates(["n", "lambda"])
    parts.append(local_law_diagnostic(group, predictions).assign(**dict(zip(KERNEL_KEYS, keys))))
table = pd.concat(parts, ignore_index=True)
table = table[[*KERNEL_KEYS, *[c for c in table.columns if c not in KERNEL_KEYS]]]
summary = table.groupby(KERNEL_KEYS)[["dof_rel_dev", "train_test_rel_dev"]].median()
log.info("median local-law deviations\n%s", summary.to_string())
save_table(snakemake.output.table, table)
fig = local_law_deviations(table)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
