import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.io import load_table, save_figure, save_table
from rmtlens.report import noise_accuracy_figure, noise_curves
from rmtlens.studies import noise_accuracy, sample_wise_peaks
from rmtlens.workflow import job_logger

p, out = snakemake.params, snakemake.output
log = job_logger(snakemake.log[0], "noise_summary")
table = pd.concat([load_table(f) for f in snakemake.input], ignore_index=True)
accuracy = noise_accuracy(table, p.n_min)
peaks = sample_wise_peaks(table)
log.info("estimator accuracy per noise level (n >= %d)\n%s", p.n_min, accuracy.to_string(index=False))
log.info("sample-wise double descent at the smallest ridges\n%s", peaks.to_string(index=False))
save_table(out.table, table)
save_table(out.accuracy, accuracy)
save_table(out.peaks, peaks)
for fig, png, svg in ((noise_curves(table, p.dataset_labels), out.png, out.svg),
                      (noise_accuracy_figure(accuracy), out.accuracy_png, out.accuracy_svg)):
    save_figure(fig, png, svg)
    plt.close(fig)
