import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.inputs import target_map
from rmtlens.io import load_npz, save_figure, save_table
from rmtlens.report import learnability_figure
from rmtlens.studies import learnability_tables
from rmtlens.workflow import job_logger, spectrum_rcond

p, out = snakemake.params, snakemake.output
log = job_logger(snakemake.log[0], "learnability")
summaries, curves = [], []
for unit, path in zip(p.units, snakemake.input.spectra):
    spectrum = load_npz(path)
    n_classes = spectrum["proj_onehot"].shape[1]
    targets = target_map(n_classes, p.targets["kind"], p.targets["positive_classes"])
    summary, modes = learnability_tables(spectrum["eigvals"], spectrum["proj_onehot"], targets,
                                         p.sample_sizes[unit["dataset"]], p.spec["lambdas_rel"], spectrum_rcond(spectrum, p.rcond),
                                         p.spec["modes"], scale=float(spectrum["scale"]))
    for frame, bucket in ((summary, summaries), (modes, curves)):
        for i, (k, v) in enumerate(unit.items()):
            frame.insert(i, k, v)
        bucket.append(frame)
summary, modes = pd.concat(summaries, ignore_index=True), pd.concat(curves, ignore_index=True)
log.info("learnability: effective dimension and learned target power\n%s", summary.to_string(index=False))
save_table(out.table, summary)
save_table(out.modes, modes)
fig = learnability_figure(modes, summary, p.dataset_labels)
save_figure(fig, out.png, out.svg)
plt.close(fig)
