rule prepare_source_task:
    input:
        archive=source_task_archive,
    output:
        "results/source_tasks/{task}.npz",
    params:
        task=source_task_spec,
        download_root="resources/datasets",
    log:
        "logs/prepare_source_task/{task}.log",
    benchmark:
        "benchmarks/prepare_source_task/{task}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/prepare_source_task.py"


rule pretrain:
    input:
        task=pretrain_source_task,
    output:
        weights="resources/weights/{backbone}/trained.safetensors",
        history="results/pretrain/{backbone}.csv",
    params:
        spec=pretrain_spec,
    log:
        "logs/pretrain/{backbone}.log",
    benchmark:
        "benchmarks/pretrain/{backbone}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=240,
        gpu=1,
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/pretrain.py"


rule pretraining_figure:
    input:
        expand("results/pretrain/{backbone}.csv", backbone=trained_backbones()),
    output:
        png=report("results/figures/pretraining.png", caption="../report/pretraining.rst", category="Pretraining", labels={"figure": "training curves", "format": "png"}),
        svg=report("results/figures/pretraining.svg", caption="../report/pretraining.rst", category="Pretraining", labels={"figure": "training curves", "format": "svg"}),
    params:
        backbones=trained_backbones(),
    log:
        "logs/pretraining_figure.log",
    benchmark:
        "benchmarks/pretraining_figure.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/pretraining_figure.py"
