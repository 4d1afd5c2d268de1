import matplotlib.pyplot as plt

from rmtlens.estimators import KERNEL_KEYS
from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import local_law_deviations, resolved_rows
from rmtlens.studies import local_law_table
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "local_law")
joined, left_out = resolved_rows(load_table(snakemake.input.joined))
log.info("%d rows left out: not resolved (SPEC §2)", left_out)
table = local_law_table(joined)
summary = table.groupby(KERNEL_KEYS)[["dof_rel_dev", "train_test_rel_dev"]].median()
log.info("median local-law deviations\n%s", summary.to_string())
save_table(snakemake.output.table, table)
fig = local_law_deviations(table)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
