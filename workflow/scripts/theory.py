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
window = p.powerlaw["powerlaw_window"]
grid, fits, curves = predict_grid(
    spectrum["eigvals"], spectrum["proj_onehot"], targets, p.sample_sizes, p.lambdas_rel,
    (window["k_min"], window["k_max"]), float(spectrum["scale"]), n_range=p.n_range,
    primary=p.powerlaw["powerlaw_primary"], floor=float(spectrum["floor"]), min_r2=p.powerlaw["powerlaw_min_r2"],
)
keys = dict(dataset=wc.dataset, backbone=wc.backbone, weights=wc.weights, kernel=wc.kernel)
fits = pd.DataFrame([{**keys, **fit} for fit in fits])
log.info("rank %d of N_pool = %d; %.1f%% of the target's power lies outside the span",
         fits["rank"].iloc[0], fits["n_pool"].iloc[0], 100 * fits["out_of_span_share"].iloc[0])
log.info("power-law fits (alpha on eigenvalues, delta on tail sums; primary: %s)\n%s", p.powerlaw["powerlaw_primary"],
         fits[["window", "k_min", "k_max", "alpha", "alpha_r2", "alpha_lo", "alpha_hi", "delta", "delta_r2",
               "delta_lo", "delta_hi", "valid", "reason", "noiseless_rate", "noisy_rate"]].to_string(index=False))
save_table(snakemake.output.predictions, pd.DataFrame({**keys, **grid}))
save_table(snakemake.output.fit, fits)
save_table(snakemake.output.curves, pd.DataFrame({**keys, **curves}))
