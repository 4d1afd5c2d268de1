rule prepare_source_task:
    input:
        archive=source_task_archive,
    output:
        "results/source_tasks/{task}.npz",
    log:
        "logs/prepare_source_task/{task}.log",
    benchmark:
        "benchmarks/prepare_source_task/{task}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task=source_task_spec,
        download_root="resources/datasets",
    script:
        "../scripts/prepare_source_task.py"


rule pretrain:
    input:
        task=pretrain_source_task,
    output:
        weights="resources/weights/{backbone}/trained.safetensors",
        history="results/pretrain/{backbone}.csv",
    log:
        "logs/pretrain/{backbone}.log",
    benchmark:
        "benchmarks/pretrain/{backbone}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=240,
        gpu=1,
    params:
        spec=pretrain_spec,
    script:
        "../scripts/pretrain.py"


rule pretraining_figure:
    input:
        expand("results/pretrain/{backbone}.csv", backbone=trained_backbones()),
    output:
        png=report(
            "results/figures/pretraining.png",
            caption="../report/pretraining.rst",
            category="Pretraining",
            labels=report_labels("training curves", "png", study="pretraining"),
        ),
        svg=report(
            "results/figures/pretraining.svg",
            caption="../report/pretraining.rst",
            category="Pretraining",
            labels=report_labels("training curves", "svg", study="pretraining"),
        ),
    log:
        "logs/pretraining_figure.log",
    benchmark:
        "benchmarks/pretraining_figure.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        backbones=trained_backbones(),
    script:
        "../scripts/pretraining_figure.py"
