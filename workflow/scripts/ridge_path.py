import itertools

import numpy as np
import pandas as pd

from rmtlens.io import save_table
from rmtlens.report import ridge_table
from rmtlens.workflow import job_logger, load_any_ridge_problem, solve_ridge_path

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"ridge_path/{wc.backbone}/{wc.weights}/{wc.kernel}")
lambdas_rel = np.asarray(p.lambdas_rel)
safety, rcond = p.accuracy["safety"], p.accuracy["rcond"]
tables = []
for (n, seed), eigh in zip(itertools.product(p.sizes, p.seeds), snakemake.input.eigh, strict=True):
    prob = load_any_ridge_problem(snakemake.input, p.targets, eigh=eigh)
    if len(prob.index) != n:
        raise ValueError(f"{eigh} holds a subsample of {len(prob.index)} points, expected n = {n}")
    log.info("seed %d, %s path: %d eigen-directions for n = %d", seed, "low-rank" if prob.low_rank else "dense",
             len(prob.eigvals), len(prob.index))
    floor = prob.floor(safety, rcond)
    path = solve_ridge_path(prob, lambdas_rel * prob.scale, safety, rcond, p.floor_tolerance)
    n_null = int(np.sum(prob.eigvals <= floor)) + len(prob.index) - len(prob.eigvals)  # thin path: + the complement
    meta = dict(
        dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel, n=int(n), seed=int(seed),
        n_test=len(prob.y_test), n_classes=prob.y_train.shape[1], kernel_scale=prob.scale,
        relative_error=prob.relative_error, floor=floor, n_null=n_null,
    )
    table = ridge_table(path, lambdas_rel, meta)
    best = table.loc[table["test_risk"].idxmin()]
    log.info("%d ridges; best test risk %.4g (error %.3f) at λ/s = %.2g", len(table), best.test_risk, best.test_error,
             best.lambda_rel)
    log.info("floor %.3g (%.3g of λ_max; %s): %d of %d eigen-directions null, %d within a factor 2 of the floor; "
             "%d of %d ridges unresolved: %d below the floor, %d more whose test risk, GCV or LOO move by %.2g or "
             "more at half or twice the floor (SPEC §2)",
             floor, floor / max(prob.eigvals.max(), np.finfo(float).tiny),
             "rcond override" if rcond is not None else f"relative error {prob.relative_error:.3g}",
             n_null, len(prob.index), int(np.sum((prob.eigvals > floor / 2) & (prob.eigvals <= 2 * floor))),
             int((~table["resolved"]).sum()), len(table), int((~table["resolved_floor"]).sum()),
             int((table["resolved_floor"] & ~table["resolved"]).sum()), p.floor_tolerance)
    tables.append(table)
save_table(snakemake.output[0], pd.concat(tables, ignore_index=True))
