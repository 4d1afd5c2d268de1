import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import (
    THEORY_ESTIMATORS,
    de_bias_by_pool_fraction,
    estimator_accuracy,
    estimator_accuracy_by_regime,
    estimators_versus_risk,
    join_predictions,
    resolved_rows,
    with_bootstrap_intervals,
    with_power_law_fit,
)
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "estimators")
predictions = pd.concat([load_table(f) for f in snakemake.input.predictions], ignore_index=True)
joined = join_predictions(load_table(snakemake.input.table), predictions)
resolved, left_out = resolved_rows(joined)
log.info("%d of %d rows left out: not resolved (SPEC §2)", left_out, len(joined))
accuracy = estimator_accuracy(resolved, snakemake.params.n_min, THEORY_ESTIMATORS)
boot = snakemake.params.bootstrap
accuracy = with_bootstrap_intervals(accuracy, resolved, snakemake.params.n_min, THEORY_ESTIMATORS,
                                    boot["replicates"], boot["seed"])
accuracy = with_power_law_fit(accuracy, load_table(snakemake.input.fits))
log.info("relative error against the test risk (n >= %d)\n%s", snakemake.params.n_min, accuracy.to_string(index=False))
save_table(snakemake.output.joined, joined)
save_table(snakemake.output.estimators, accuracy)
de_bias = de_bias_by_pool_fraction(resolved, snakemake.params.n_pool, snakemake.params.n_min)
log.info("omniscient DE against the test risk by n/N_pool (resolved rows)\n%s", de_bias.to_string(index=False))
save_table(snakemake.output.de_bias, de_bias)
by_regime = estimator_accuracy_by_regime(resolved, snakemake.params.n_pool, snakemake.params.n_min, THEORY_ESTIMATORS,
                                         boot["replicates"], boot["seed"])
log.info("relative error by ridge and n/N_pool\n%s", by_regime.to_string(index=False))
save_table(snakemake.output.by_regime, by_regime)
fig = estimators_versus_risk(resolved, THEORY_ESTIMATORS, snakemake.params.n_min)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
