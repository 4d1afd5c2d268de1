# Dense eigendecompositions of stored kernels (the eNTK route; feature kernels take the
# low-rank rules of lowrank.smk). Every seed's subsample at n = N_pool is a permutation
# of the pool, so `pool_eigh` eigendecomposes the pool block once and those `eigh` jobs
# permute its eigenvector rows (rmtlens.estimators.permuted_eigh) instead of running
# four O(N_pool³) decompositions; `pool_spectrum` reads the same decomposition (the
# helpers are at the end of common.smk).


rule pool_eigh:
    input:
        kernel="results/{run}/kernels/{dataset}/{backbone}/{weights}/{kernel}.npy",
    output:
        "results/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
    log:
        "logs/{run}/pool_eigh/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/pool_eigh/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: eigh_mem_mb(wc, n_pool(wc)),
        runtime=lambda wc, attempt: minutes_for(n_pool(wc), 90, 3, attempt),
    params:
        n_pool=n_pool,
    script:
        "../scripts/pool_eigh.py"


rule eigh:
    input:
        unpack(eigh_source),
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
        mem_mb=lambda wc: eigh_mem_mb(wc, int(wc.n), permuted=int(wc.n) == n_pool(wc)),
        runtime=lambda wc, attempt: len(config["seeds"])
        * minutes_for(int(wc.n), 90, 3, attempt),
    params:
        n_pool=n_pool,
        seeds=config["seeds"],
    script:
        "../scripts/eigh.py"


rule pool_spectrum:
    input:
        pool_eigh=pool_eigh_file,
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
        mem_mb=lambda wc: eigh_mem_mb(wc, n_pool(wc)),  # the check, then the eigenvectors
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        accuracy=accuracy_params(),
    script:
        "../scripts/pool_spectrum.py"
