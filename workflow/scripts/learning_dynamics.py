import pandas as pd

from rmtlens.io import save_table
from rmtlens.studies import time_grid
from rmtlens.workflow import job_logger, load_any_ridge_problem, solve_gradient_flow

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"learning_dynamics/{wc.backbone}/{wc.weights}/{wc.kernel}")
prob = load_any_ridge_problem(snakemake.input, p.targets)
log.info("%s path: %d eigen-directions for n = %d", "low-rank" if prob.low_rank else "dense", len(prob.eigvals),
         len(prob.index))
times = time_grid(prob.scale, p.ridge["min"], p.ridge["max"], p.spec["num_times"], p.spec["learning_rate"])
safety, rcond = p.accuracy["safety"], p.accuracy["rcond"]
floor = prob.floor(safety, rcond)
table, summary = solve_gradient_flow(prob, times, p.spec["learning_rate"], safety, rcond)
log.info("n = %d: %s", len(prob.index), {k: round(v, 4) for k, v in summary.items()})
log.info("%d of %d times left out of the summary: their matched ridge n/(ηt) is below the accuracy floor %.3g",
         int(summary["unresolved_times"]), len(times), floor)
frame = pd.DataFrame(table).assign(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel,
                                   n=len(prob.index), kernel_scale=prob.scale,
                                   **{f"summary_{k}": v for k, v in summary.items()})
save_table(snakemake.output[0], frame)
