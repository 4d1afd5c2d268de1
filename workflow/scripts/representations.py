import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rmtlens.io import load_npz, load_table, save_figure, save_table
from rmtlens.plots import spectra_and_alignment
from rmtlens.representations import alignment_at, cumulative_alignment, effective_rank, normalised_spectrum
from rmtlens.runlog import job_logger
from rmtlens.tables import KERNEL_KEYS
from rmtlens.targets import make_targets
from rmtlens.theory import population_from_pool

p = snakemake.params
log = job_logger(snakemake.log[0], "representations")
best = load_table(snakemake.input.best).set_index(KERNEL_KEYS)
rows, curves = [], []
for unit, spectrum_file, fit_file in zip(p.units, snakemake.input.spectra, snakemake.input.fits):
    spectrum = load_npz(spectrum_file)
    n_classes = spectrum["proj_onehot"].shape[1]
    target_map = make_targets(range(n_classes), n_classes, p.targets["kind"], p.targets["positive_classes"])
    pop = population_from_pool(spectrum["eigvals"], spectrum["proj_onehot"], target_map, p.rcond)
    fit = load_table(fit_file).iloc[0]
    key = tuple(unit[k] for k in KERNEL_KEYS)
    rows.append({
        **unit,
        "effective_rank": effective_rank(pop["mu"]),
        **{f"alignment_k{k}": v for k, v in alignment_at(pop["beta_sq"], p.alignment_ks).items()},
        "alpha": fit["alpha"], "delta": fit["delta"],
        **best.loc[key, ["n", "best_lambda_rel", "best_test_risk", "test_error_at_best"]].to_dict(),
    })
    k = np.arange(1, pop["mu"].size + 1)
    curves.append(pd.DataFrame({**unit, "k": k, "normalised_mu": normalised_spectrum(pop["mu"]),
                                "alignment": cumulative_alignment(pop["beta_sq"])}))
table = pd.DataFrame(rows)
log.info("representations\n%s", table.to_string(index=False))
save_table(snakemake.output.table, table)
fig = spectra_and_alignment(pd.concat(curves, ignore_index=True), p.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
