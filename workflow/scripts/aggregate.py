import pandas as pd

from rmtlens.estimators import KERNEL_KEYS
from rmtlens.io import load_table, save_table
from rmtlens.report import ESTIMATORS, best_risk, estimator_accuracy, with_bootstrap_intervals
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "aggregate")
table = pd.concat([load_table(path) for path in snakemake.input], ignore_index=True)
table = table.sort_values([*KERNEL_KEYS, "n", "seed", "lambda_rel"], kind="stable", ignore_index=True)
accuracy = estimator_accuracy(table, snakemake.params.n_min)
boot = snakemake.params.bootstrap
accuracy = with_bootstrap_intervals(accuracy, table, snakemake.params.n_min, ESTIMATORS, boot["replicates"], boot["seed"])
log.info("%d rows from %d ridge paths\n%s", len(table), len(snakemake.input), accuracy.to_string(index=False))
save_table(snakemake.output.table, table)
save_table(snakemake.output.accuracy, accuracy)
best = best_risk(table)
log.info("best ridge at the largest n per kernel\n%s", best.to_string(index=False))
save_table(snakemake.output.best, best)
