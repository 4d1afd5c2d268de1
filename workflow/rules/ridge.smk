rule ridge_path:
    input:
        unpack(kernel_source),
        eigh=per_seed(
            "results/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.npz"
        ),
        dataset="results/{run}/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        per_seed(
            "results/{run}/ridge/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.parquet"
        ),
    log:
        "logs/{run}/ridge_path/{dataset}/{backbone}/{weights}/{kernel}/n{n}.log",
    benchmark:
        "benchmarks/{run}/ridge_path/{dataset}/{backbone}/{weights}/{kernel}/n{n}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, int(wc.n)),
        runtime=lambda wc, attempt: len(config["seeds"])
        * minutes_for(int(wc.n), 60, 2, attempt),
    params:
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
