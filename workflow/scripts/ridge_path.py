import numpy as np

from rmtlens.io import save_table
from rmtlens.report import ridge_table
from rmtlens.workflow import job_logger, load_any_ridge_problem, solve_ridge_path

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"ridge_path/{wc.backbone}/{wc.weights}/{wc.kernel}/n{wc.n}_s{wc.seed}")
prob = load_any_ridge_problem(snakemake.input, p.targets)
log.info("%s path: %d eigen-directions for n = %d", "low-rank" if prob.low_rank else "dense", len(prob.eigvals),
         len(prob.index))
lambdas_rel = np.asarray(p.lambdas_rel)
path = solve_ridge_path(prob, lambdas_rel * prob.scale, p.rcond)
meta = dict(
    dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel, n=int(wc.n), seed=int(wc.seed),
    n_test=len(prob.y_test), n_classes=prob.y_train.shape[1], kernel_scale=prob.scale,
)
table = ridge_table(path, lambdas_rel, meta)
best = table.loc[table["test_risk"].idxmin()]
log.info("%d ridges; best test risk %.4g (error %.3f) at λ/s = %.2g", len(table), best.test_risk, best.test_error, best.lambda_rel)
save_table(snakemake.output[0], table)
