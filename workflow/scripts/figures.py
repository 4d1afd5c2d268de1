import matplotlib.pyplot as plt

from rmtlens.io import load_table, save_figure
from rmtlens.report import estimators_versus_risk, resolved_rows, risk_versus_lambda, risk_versus_n
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "figures")
table, left_out = resolved_rows(load_table(snakemake.input.table))
log.info("%d rows left out of the figures: not resolved (SPEC §2)", left_out)
out, labels = snakemake.output, snakemake.params.dataset_labels
figures = {
    "risk_vs_n": risk_versus_n(table, snakemake.params.lambdas_rel, labels),
    "gcv_vs_risk": estimators_versus_risk(table, {"gcv": "GCV"}, n_min=1),
    "risk_vs_lambda": risk_versus_lambda(table, labels),
}
for name, fig in figures.items():
    save_figure(fig, out[f"{name}_png"], out[f"{name}_svg"])
    plt.close(fig)
    log.info("wrote %s", name)
