import matplotlib.pyplot as plt
import numpy as np

from rmtlens.inputs import PreparedDataset, make_targets
from rmtlens.io import load_npy, load_npz, save_figure, save_table
from rmtlens.report import double_descent_curves, double_descent_summary
from rmtlens.studies import double_descent_study
from rmtlens.workflow import job_logger, set_torch_threads

p, spec = snakemake.params, snakemake.params.spec
log = job_logger(snakemake.log[0], "double_descent")
set_torch_threads(snakemake.threads)
data = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
embeddings = load_npy(snakemake.input.linear)
top = spec["linear"]["ratios"]["max"] or data.n_pool / embeddings.shape[1]
table = double_descent_study(
    data.images if spec["inputs"] == "pixels" else load_npy(snakemake.input.rf),
    make_targets(data.labels, len(data.classes), p.targets["kind"], p.targets["positive_classes"]),
    data.n_pool, embeddings, n=spec["n"],
    ratios=np.geomspace(spec["ratios"]["min"], spec["ratios"]["max"], spec["ratios"]["num"]),
    activations=spec["activations"], ridge_rel=spec["ridge_rel"], seeds=spec["seeds"],
    linear_ratios=np.geomspace(spec["linear"]["ratios"]["min"], top, spec["linear"]["ratios"]["num"]),
    linear_label=spec["linear"]["embedding"], rcond=p.accuracy["rcond"], safety=p.accuracy["safety"],
)
summary = double_descent_summary(table)
log.info("double descent summary\n%s", summary.to_string(index=False))
save_table(snakemake.output.table, table)
save_table(snakemake.output.summary, summary)
fig = double_descent_curves(table)
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
