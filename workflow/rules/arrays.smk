# Datasets given as arrays and representations from files (`source: arrays`). The
# dataset's labels or targets and split become results/datasets/{dataset}.npz (no
# images); each representation's file becomes the embeddings file a backbone's
# `embed` job writes, validated and in pool-then-test row order, with weights `file`,
# so every rule downstream of `embed` runs on it unchanged. A representation's file is
# an input of its own job only: changing it reruns that representation's chain and
# the summaries, nothing else. Headers were checked before any job
# (check_file_representations, common.smk); the jobs check every value.
import re

from rmtlens.workflow import array_datasets


def array_dataset_pattern():
    """Wildcard constraint matching exactly the datasets given as arrays (none: nothing)."""
    return "|".join(re.escape(name) for name in array_datasets(config)) or "(?!)"


def array_dataset_files(wildcards):
    """The dataset's labels (or targets) file and, when given, its split file."""
    ds = config["datasets"][wildcards.dataset]
    files = {"outcome": (ds.get("labels") or ds.get("targets"))["file"]}
    if ds.get("split"):
        files["split"] = ds["split"]["file"]
    return files


def array_dataset_spec(wildcards):
    """The fields that decide a dataset's rows and targets: not its representations,
    display label or backbone list (changing those reruns no dataset job)."""
    ds = config["datasets"][wildcards.dataset]
    return canonical(
        {
            k: v
            for k, v in ds.items()
            if k not in ("label", "backbones", "representations")
        }
    )


def representation_spec(wildcards):
    return config["datasets"][wildcards.dataset]["representations"][wildcards.backbone]


rule prepare_array_dataset:
    input:
        unpack(array_dataset_files),
    output:
        "results/datasets/{dataset}.npz",
    log:
        "logs/prepare_array_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_array_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=array_dataset_pattern(),
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc, input: 2000 + 4 * input.size_mb,
        runtime=10,
    params:
        spec=array_dataset_spec,
    script:
        "../scripts/prepare_array_dataset.py"


ruleorder: prepare_array_dataset > prepare_dataset


rule representation_file:
    input:
        embeddings=lambda wc: representation_spec(wc)["file"],
        dataset="results/datasets/{dataset}.npz",
    output:
        "results/embeddings/{dataset}/{backbone}/{weights}.npy",
    log:
        "logs/representation_file/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/representation_file/{dataset}/{backbone}/{weights}.tsv"
    wildcard_constraints:
        dataset=array_dataset_pattern(),
        weights="file",
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc, input: 2000 + 4 * input.size_mb,
        runtime=10,
    params:
        spec=lambda wc: canonical(
            {
                k: v
                for k, v in representation_spec(wc).items()
                if k not in ("file", "kernels")
            }
        ),
    script:
        "../scripts/representation_file.py"
