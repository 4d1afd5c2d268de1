rule ridge_path:
    input:
        kernel="results/kernels/{dataset}/{backbone}/{weights}/{kernel}.npy",
        eigh="results/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.npz",
        dataset="results/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        "results/ridge/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.parquet",
    log:
        "logs/ridge_path/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.log",
    benchmark:
        "benchmarks/ridge_path/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: 2000 + 48 * int(wc.n) ** 2 // 10**6,
        runtime=lambda wc, attempt: minutes_for(int(wc.n), 60, 2, attempt),
    params:
        lambdas_rel=relative_ridges(),
        accuracy=accuracy_params(),
        targets=canonical(config["targets"]),
    script:
        "../scripts/ridge_path.py"


rule aggregate:
    input:
        ridge_path_files,
    output:
        table="results/tables/ridge.parquet",
        accuracy=report(
            "results/tables/gcv_accuracy.csv",
            caption="../report/table_gcv_accuracy.rst",
            category="Summary tables",
            labels={"table": "GCV accuracy"},
        ),
        best=report(
            "results/tables/best_risk.csv",
            caption="../report/table_best_risk.rst",
            category="Summary tables",
            labels={"table": "best risk per kernel"},
        ),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    params:
        n_min=config["analysis"]["n_min"],
    script:
        "../scripts/aggregate.py"
