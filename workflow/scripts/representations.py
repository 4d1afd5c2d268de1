import matplotlib.pyplot as plt
from rmtlens.io import load_npz, load_table, save_figure, save_table
from rmtlens.report import spectra_and_alignment
from rmtlens.studies import representation_tables
from rmtlens.workflow import job_logger

p = snakemake.params
log = job_logger(snakemake.log[0], "representations")
spectra = [load_npz(f) for f in snakemake.input.spectra]
fits = load_table(snakemake.input.fits)
fits = fits[fits["primary"].astype(bool)]
table, curves = representation_tables(p.units, spectra, fits, load_table(snakemake.input.best), p.targets["kind"],
                                      p.targets["positive_classes"], p.alignment_ks, p.rcond)
log.info("representations\n%s", table.to_string(index=False))
save_table(snakemake.output.table, table)
fig = spectra_and_alignment(curves, p.dataset_labels)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
