import matplotlib.pyplot as plt

from rmtlens.estimators import KERNEL_KEYS
from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import (
    LOCAL_LAW_HOLDS,
    gcv_beside_local_law,
    gcv_local_law_figure,
    local_law_deviations,
    local_law_predicts_gcv,
    resolved_rows,
)
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
beside = gcv_beside_local_law(joined, table, snakemake.params.n_min)
predicts = local_law_predicts_gcv(beside, LOCAL_LAW_HOLDS)
log.info("GCV's error beside the local-law deviation\n%s", predicts.to_string(index=False))
save_table(snakemake.output.beside, beside)
save_table(snakemake.output.summary, predicts)
fig = gcv_local_law_figure(beside, predicts, LOCAL_LAW_HOLDS)
save_figure(fig, snakemake.output.beside_png, snakemake.output.beside_svg)
plt.close(fig)
