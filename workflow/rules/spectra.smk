rule eigh:
    input:
        kernel="results/{run}/kernels/{dataset}/{backbone}/{weights}/{kernel}.npy",
    output:
        per_seed(
            "results/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.npz"
        ),
    log:
        "logs/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}.log",
    benchmark:
        "benchmarks/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: 1000 + 48 * int(wc.n) ** 2 // 10**6,
        runtime=lambda wc, attempt: len(config["seeds"])
        * minutes_for(int(wc.n), 90, 3, attempt),
    params:
        n_pool=n_pool,
        seeds=config["seeds"],
    script:
        "../scripts/eigh.py"


rule pool_spectrum:
    input:
        kernel="results/{run}/kernels/{dataset}/{backbone}/{weights}/{kernel}.npy",
        dataset="results/{run}/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        "results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
    log:
        "logs/{run}/pool_spectrum/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/pool_spectrum/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: 1000 + 48 * n_pool(wc) ** 2 // 10**6,
        runtime=lambda wc, attempt: minutes_for(n_pool(wc), 90, 3, attempt),
    params:
        accuracy=accuracy_params(),
    script:
        "../scripts/pool_spectrum.py"
