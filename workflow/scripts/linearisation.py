import matplotlib.pyplot as plt
import pandas as pd

from rmtlens.inputs import PreparedDataset, pick_device, preprocess
from rmtlens.io import load_npz, save_figure, save_table
from rmtlens.report import linearisation_summary
from rmtlens.studies import (
    IMAGE_MEAN,
    IMAGE_STD,
    linearisation_claims,
    run_linearisation_study,
)
from rmtlens.workflow import Progress, job_logger, set_torch_threads

spec = snakemake.params.spec
log = job_logger(snakemake.log[0], "linearisation")
set_torch_threads(snakemake.threads)
data = PreparedDataset.from_arrays(load_npz(snakemake.input.dataset))
N = data.n_pool
x = preprocess(data.images, 32, IMAGE_MEAN, IMAGE_STD)
n_tasks = len(spec["eigen_indices"]) + (spec["super_classes"] is not None)
counter = Progress(log, 3 * n_tasks * spec["epochs"], "training epochs", interval=20)
tables = run_linearisation_study(
    x[:N], data.labels[:N], x[N:], data.labels[N:],
    super_classes=spec["super_classes"], eigen_indices=spec["eigen_indices"], width=spec["width"],
    depth=spec["depth"], epochs=spec["epochs"], batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"],
    alignment_points=spec["alignment_points"], checkpoints=spec["checkpoints"], memory_gb=spec["memory_gb"],
    device=pick_device(), progress=counter,
)
claims = linearisation_claims(tables["accuracy"], tables["alignment"])
claims = pd.concat([frame.assign(claim=name) for name, frame in claims.items()], ignore_index=True)
log.info("test accuracy\n%s", tables["accuracy"].to_string(index=False))
save_table(snakemake.output.accuracy, tables["accuracy"].merge(tables["tasks"], how="left"))
save_table(snakemake.output.alignment, tables["alignment"])
save_table(snakemake.output.claims, claims)
fig = linearisation_summary(tables["accuracy"], tables["alignment"])
save_figure(fig, snakemake.output.png, snakemake.output.svg)
plt.close(fig)
