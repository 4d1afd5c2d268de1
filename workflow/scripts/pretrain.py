import os
import sys

# Set before torch loads: its OpenMP threads then sleep when idle instead of spinning,
# so that two pretrainings, whose small steps keep about one core busy each, share two cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch_loaded_first = "torch" in sys.modules  # then the setting came too late (slower, not wrong)

import pandas as pd

from rmtlens.inputs import pick_device, pretrain_backbone, save_backbone_state
from rmtlens.io import load_npz, save_table
from rmtlens.workflow import Progress, job_logger, set_torch_threads

wc, spec = snakemake.wildcards, snakemake.params.spec
log = job_logger(snakemake.log[0], f"pretrain/{wc.backbone}")
if torch_loaded_first:
    log.warning("torch was loaded before OMP_WAIT_POLICY was set: its idle threads spin")
set_torch_threads(spec["threads"])  # fixed by the config: the weights depend on it
task = load_npz(snakemake.input.task)
device = pick_device()
log.info("pretraining %s on %d images (%d classes), %d epochs, on %s (%d torch threads, OMP_WAIT_POLICY=%s)",
         spec["model"], len(task["train_labels"]), len(task["classes"]), spec["epochs"], device, spec["threads"],
         os.environ["OMP_WAIT_POLICY"])
result = pretrain_backbone(
    task["train_images"], task["train_labels"], task["heldout_images"], task["heldout_labels"],
    model_name=spec["model"], image_size=spec["image_size"], seed=spec["seed"], epochs=spec["epochs"],
    batch_size=spec["batch_size"], lr=spec["lr"], optimizer=spec["optimizer"], weight_decay=spec["weight_decay"],
    augment=spec["augment"], n_classes=len(task["classes"]), model_kwargs=spec["model_kwargs"], device=device,
    progress=Progress(log, spec["epochs"] * len(task["train_labels"]), "training images"),
    on_epoch=lambda row: log.info("epoch %d: train loss %.4f, held-out accuracy %.3f",
                                  row["epoch"], row["train_loss"], row["heldout_accuracy"]),
)
history = pd.DataFrame(result.history).assign(backbone=wc.backbone, model=spec["model"])
save_backbone_state(snakemake.output.weights, result.backbone_state, spec["model"])
save_table(snakemake.output.history, history)
