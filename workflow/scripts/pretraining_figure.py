import matplotlib.pyplot as plt

from rmtlens.io import load_table, save_figure
from rmtlens.report import training_curves
from rmtlens.workflow import job_logger

log = job_logger(snakemake.log[0], "pretraining_figure")
histories = {b: load_table(path) for b, path in zip(snakemake.params.backbones, snakemake.input)}
fig = training_curves(histories)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
