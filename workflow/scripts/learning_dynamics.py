import pandas as pd

from rmtlens.estimators import accuracy_floor
from rmtlens.io import save_table
from rmtlens.studies import gradient_flow_path, time_grid
from rmtlens.workflow import job_logger, load_ridge_problem

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"learning_dynamics/{wc.backbone}/{wc.weights}/{wc.kernel}")
prob = load_ridge_problem(snakemake.input.dataset, snakemake.input.eigh, snakemake.input.kernel, p.targets,
                          snakemake.input.accuracy)
times = time_grid(prob.scale, p.ridge["min"], p.ridge["max"], p.spec["num_times"], p.spec["learning_rate"])
floor = accuracy_floor(prob.eigvals, prob.relative_error, p.accuracy["safety"], rcond=p.accuracy["rcond"])
table, summary = gradient_flow_path(prob.eigvals, prob.eigvecs, prob.y_train, prob.k_test, prob.y_test, times,
                                    p.spec["learning_rate"], floor=floor, safety=p.accuracy["safety"])
log.info("n = %d: %s", len(prob.index), {k: round(v, 4) for k, v in summary.items()})
log.info("%d of %d times left out of the summary: their matched ridge n/(ηt) is below the accuracy floor %.3g",
         int(summary["unresolved_times"]), len(times), floor)
frame = pd.DataFrame(table).assign(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel,
                                   n=len(prob.index), kernel_scale=prob.scale,
                                   **{f"summary_{k}": v for k, v in summary.items()})
save_table(snakemake.output[0], frame)
