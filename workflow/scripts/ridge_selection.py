import matplotlib.pyplot as plt

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import selected_lambda_figure
from rmtlens.studies import regret_summary, ridge_selection_rows, ridge_selection_table
from rmtlens.workflow import job_logger

p, out = snakemake.params, snakemake.output
log = job_logger(snakemake.log[0], "ridge_selection")
rows = ridge_selection_rows(load_table(snakemake.input.joined))
table = ridge_selection_table(rows)
regret = regret_summary(rows, p.n_min)
log.info("regret R(λ_selected)/R(λ_oracle) over n >= %d and seeds\n%s", p.n_min, regret.to_string(index=False))
save_table(out.table, table)
save_table(out.regret, regret)
fig = selected_lambda_figure(rows, p.dataset_labels)
save_figure(fig, out.png, out.svg)
plt.close(fig)
