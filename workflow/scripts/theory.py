import pandas as pd

from rmtlens.estimators import predict_grid
from rmtlens.inputs import target_map
from rmtlens.io import load_npz, save_table
from rmtlens.workflow import job_logger

wc, p = snakemake.wildcards, snakemake.params
log = job_logger(snakemake.log[0], f"theory/{wc.backbone}/{wc.weights}/{wc.kernel}")
spectrum = load_npz(snakemake.input.spectrum)
n_classes = spectrum["proj_onehot"].shape[1]
targets = target_map(n_classes, p.targets["kind"], p.targets["positive_classes"])
grid, fit = predict_grid(
    spectrum["eigvals"], spectrum["proj_onehot"], targets, p.sample_sizes, p.lambdas_rel,
    p.window["k_min"], p.window["k_max"], floor=float(spectrum["floor"]), scale=float(spectrum["scale"]),
)
keys = dict(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel)
log.info("power-law fit over k = %d..%d: alpha = %.3f (R² %.3f), delta = %.3f (R² %.3f), rate min(δ−1, 2α) = %.3f",
         fit["k_min"], fit["k_max"], fit["alpha"], fit["alpha_r2"], fit["delta"], fit["delta_r2"], fit["rate"])
save_table(snakemake.output.predictions, pd.DataFrame({**keys, **grid}))
save_table(snakemake.output.fit, pd.DataFrame([{**keys, **fit}]))
