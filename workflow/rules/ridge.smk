rule ridge_path:
    input:
        unpack(kernel_source),
        eigh=ridge_eigh_files,
        dataset="results/{run}/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        "results/{run}/ridge/{dataset}/{backbone}/{weights}/{kernel}.parquet",
    log:
        "logs/{run}/ridge_path/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/ridge_path/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    # one job per kernel, every sample size and seed in turn: a path takes well under a
    # second at the default run's sizes, and an interpreter start per (n, seed) cost more
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, sample_sizes(wc.dataset)[-1]),
        runtime=lambda wc, attempt: len(config["seeds"])
        * sum(minutes_for(n, 60, 2, attempt) for n in sample_sizes(wc.dataset)),
    params:
        sizes=lambda wc: sample_sizes(wc.dataset),
        seeds=config["seeds"],
        lambdas_rel=relative_ridges(),
        accuracy=accuracy_params(),
        floor_tolerance=float(config["accuracy"]["floor_tolerance"]),
        targets=clean_targets(),
    script:
        "../scripts/ridge_path.py"


rule aggregate:
    input:
        ridge_path_files,
    output:
        table="results/{run}/tables/ridge.parquet",
        accuracy=report(
            "results/{run}/tables/gcv_accuracy.csv",
            caption="../report/table_gcv_accuracy.rst",
            category="Summary tables",
            subcategory="E1 ridge paths",
            labels=report_labels("GCV accuracy", kind="table"),
        ),
        best=report(
            "results/{run}/tables/best_risk.csv",
            caption="../report/table_best_risk.rst",
            category="Summary tables",
            subcategory="E1 ridge paths",
            labels=report_labels("best risk per kernel", kind="table"),
        ),
        resolved="results/{run}/tables/resolved_rows.csv",
    log:
        "logs/{run}/aggregate.log",
    benchmark:
        "benchmarks/{run}/aggregate.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
        bootstrap=canonical(config["analysis"]["bootstrap"]),
    script:
        "../scripts/aggregate.py"
