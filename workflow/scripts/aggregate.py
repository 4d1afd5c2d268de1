import pandas as pd

from rmtlens.estimators import KERNEL_KEYS
from rmtlens.io import load_table, save_table
from rmtlens.report import (
    ESTIMATORS,
    best_risk,
    estimator_accuracy,
    resolution_counts,
    resolved_rows,
    with_bootstrap_intervals,
)
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "aggregate")
table = pd.concat([load_table(path) for path in snakemake.input], ignore_index=True)
table = table.sort_values([*KERNEL_KEYS, "n", "seed", "lambda_rel"], kind="stable", ignore_index=True)
resolved, left_out = resolved_rows(table)
log.info("%d of %d rows left out of every selection and summary: not resolved (SPEC §2)\n%s", left_out, len(table),
         table[~table["resolved"]].groupby([*KERNEL_KEYS, "lambda_rel"]).size().to_string() if left_out else "")
counts = resolution_counts(table)
log.info("resolved rows per kernel: unresolved by the floor rule, and further rows unresolved because their test "
         "risk, GCV or LOO move at half or twice the floor (SPEC §2)\n%s", counts.to_string(index=False))
save_table(snakemake.output.resolved, counts)
accuracy = estimator_accuracy(resolved, snakemake.params.n_min)
boot = snakemake.params.bootstrap
accuracy = with_bootstrap_intervals(accuracy, resolved, snakemake.params.n_min, ESTIMATORS, boot["replicates"], boot["seed"])
log.info("%d rows from %d ridge paths\n%s", len(table), len(snakemake.input), accuracy.to_string(index=False))
save_table(snakemake.output.table, table)
save_table(snakemake.output.accuracy, accuracy)
best = best_risk(resolved)
log.info("best ridge at the largest n per kernel\n%s", best.to_string(index=False))
save_table(snakemake.output.best, best)
