rule prepare_source_task:
    input:
        archive=source_task_archive,
    output:
        "results/{run}/source_tasks/{task}.npz",
    log:
        "logs/{run}/prepare_source_task/{task}.log",
    benchmark:
        "benchmarks/{run}/prepare_source_task/{task}.tsv"
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
        weights="results/{run}/weights/{backbone}/trained.safetensors",
        history="results/{run}/pretrain/{backbone}.csv",
    log:
        "logs/{run}/pretrain/{backbone}.log",
    benchmark:
        "benchmarks/{run}/pretrain/{backbone}.tsv"
    # first among the jobs ready together: every 'trained' unit waits for it. Snakemake's
    # scheduler maximises the summed priority of the jobs it starts, so this must exceed
    # that of two one-thread eNTK tiles (2 x 5) filling the same two cores
    priority: 20
    conda:
        "../../envs/rmtlens.yaml"
    # one core reserved, while torch runs pretrain.threads (default 2), set by the config and
    # not by this reservation because the weights depend on it: at 32 px and batch 32 a
    # pretraining keeps about one core busy, and its idle threads sleep (OMP_WAIT_POLICY=PASSIVE
    # in the script), so two pretrainings run side by side on two cores. Reserve more for large
    # pretrainings with `--set-threads pretrain=N`; the weights stay the same.
    threads: 1
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
        expand("results/{{run}}/pretrain/{backbone}.csv", backbone=trained_backbones()),
    output:
        png=report(
            "results/{run}/figures/pretraining.png",
            caption="../report/pretraining.rst",
            category="Pretraining",
            labels=report_labels("training curves", "png", study="pretraining"),
        ),
        svg=report(
            "results/{run}/figures/pretraining.svg",
            caption="../report/pretraining.rst",
            category="Pretraining",
            labels=report_labels("training curves", "svg", study="pretraining"),
        ),
    log:
        "logs/{run}/pretraining_figure.log",
    benchmark:
        "benchmarks/{run}/pretraining_figure.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        backbones=trained_backbones(),
    script:
        "../scripts/pretraining_figure.py"
