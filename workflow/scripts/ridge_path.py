import numpy as np

from rmtlens.estimators import accuracy_floor, ridge_path
from rmtlens.io import save_table
from rmtlens.report import ridge_table
from rmtlens.workflow import job_logger, load_ridge_problem

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"ridge_path/{wc.backbone}/{wc.weights}/{wc.kernel}/n{wc.n}_s{wc.seed}")
prob = load_ridge_problem(snakemake.input.dataset, snakemake.input.eigh, snakemake.input.kernel, p.targets,
                          snakemake.input.accuracy)
lambdas_rel = np.asarray(p.lambdas_rel)
floor = accuracy_floor(prob.eigvals, prob.relative_error, p.accuracy["safety"], rcond=p.accuracy["rcond"])
path = ridge_path(prob.eigvals, prob.eigvecs, prob.y_train, prob.k_test, prob.y_test, lambdas_rel * prob.scale,
                  floor=floor, safety=p.accuracy["safety"])
meta = dict(
    dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel, n=int(wc.n), seed=int(wc.seed),
    n_test=len(prob.y_test), n_classes=prob.y_train.shape[1], kernel_scale=prob.scale,
    relative_error=prob.relative_error, floor=floor, n_null=int(np.sum(prob.eigvals <= floor)),
)
table = ridge_table(path, lambdas_rel, meta)
best = table.loc[table["test_risk"].idxmin()]
log.info("%d ridges; best test risk %.4g (error %.3f) at λ/s = %.2g", len(table), best.test_risk, best.test_error, best.lambda_rel)
log.info("floor %.3g (%.3g of λ_max; %s): %d of %d eigen-directions null; %d of %d ridges unresolved",
         floor, floor / max(prob.eigvals.max(), np.finfo(float).tiny),
         "rcond override" if p.accuracy["rcond"] is not None else f"relative error {prob.relative_error:.3g}",
         meta["n_null"], len(prob.eigvals), int((~table["resolved"]).sum()), len(table))
save_table(snakemake.output[0], table)
