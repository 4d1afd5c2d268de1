rule prepare_dataset:
    input:
        archive=dataset_archive,
    output:
        "results/datasets/{dataset}.npz",
    params:
        spec=dataset_spec,
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/prepare_dataset.py"
