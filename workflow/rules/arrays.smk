# Datasets given as arrays and representations from files (`source: arrays`). The
# dataset's labels or targets and split become results/<run>/datasets/{dataset}.npz (no
# images); each representation's file becomes the embeddings file a backbone's
# `embed` job writes, validated and in pool-then-test row order, with weights `file`,
# so every rule downstream of `embed` runs on it unchanged. A representation's file is
# an input of its own job only: changing it reruns that representation's chain and
# the summaries, nothing else. Headers were checked before any job
# (check_file_representations, common.smk); the jobs check every value.
from rmtlens.workflow import (
    array_dataset_fields,
    array_dataset_files,
    array_dataset_pattern,
    representation_fields,
    representation_path,
)


rule prepare_array_dataset:
    input:
        unpack(lambda wc: array_dataset_files(config, wc.dataset)),
    output:
        "results/{run}/datasets/{dataset}.npz",
    log:
        "logs/{run}/prepare_array_dataset/{dataset}.log",
    benchmark:
        "benchmarks/{run}/prepare_array_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=array_dataset_pattern(config),
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc, input: 2000 + 4 * input.size_mb,
        runtime=10,
    params:
        spec=lambda wc: canonical(array_dataset_fields(config, wc.dataset)),
    script:
        "../scripts/prepare_array_dataset.py"


ruleorder: prepare_array_dataset > prepare_dataset


rule representation_file:
    input:
        embeddings=lambda wc: representation_path(config, wc.dataset, wc.backbone),
        dataset="results/{run}/datasets/{dataset}.npz",
    output:
        "results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
    log:
        "logs/{run}/representation_file/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/{run}/representation_file/{dataset}/{backbone}/{weights}.tsv"
    wildcard_constraints:
        dataset=array_dataset_pattern(config),
        weights="file",
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc, input: 2000 + 4 * input.size_mb,
        runtime=10,
    params:
        spec=lambda wc: canonical(
            representation_fields(config, wc.dataset, wc.backbone)
        ),
    script:
        "../scripts/representation_file.py"
