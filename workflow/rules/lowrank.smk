# Feature kernels on the low-rank path (SPEC §2.1): the factorisation of each
# training subsample and the pool spectrum come from the cached embeddings, never
# from an N x N kernel file, so no `features.npy` is written; so does the kernel's
# accuracy record (SPEC §2, float64 round-off bound). The eNTK keeps the
# dense rules (eigh, pool_spectrum). Each job picks the thin (p < n) or the square
# factorisation itself and logs which; a new ridge grid reruns neither. Like eigh and
# ridge_path, one factor job covers one sample size n and every seed (one file each).


rule feature_accuracy:
    input:
        embeddings="results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
    output:
        "results/{run}/kernels/{dataset}/{backbone}/{weights}/features.accuracy.json",
    log:
        "logs/{run}/feature_accuracy/{dataset}/{backbone}/{weights}.log",
    benchmark:
        "benchmarks/{run}/feature_accuracy/{dataset}/{backbone}/{weights}.tsv"
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, 0),
        runtime=lambda wc, attempt: 5 * attempt,
    params:
        n_pool=n_pool,
    script:
        "../scripts/feature_accuracy.py"


rule factor:
    input:
        embeddings="results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
    output:
        per_seed(
            "results/{run}/eigh/{dataset}/{backbone}/{weights}/{kernel}/n{n}_s{seed}.npz"
        ),
    log:
        "logs/{run}/factor/{dataset}/{backbone}/{weights}/{kernel}/n{n}.log",
    benchmark:
        "benchmarks/{run}/factor/{dataset}/{backbone}/{weights}/{kernel}/n{n}.tsv"
    wildcard_constraints:
        kernel="features",
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, int(wc.n)),
        runtime=lambda wc, attempt: len(config["seeds"])
        * minutes_for(int(wc.n), 5, 1, attempt),
    params:
        n_pool=n_pool,
        seeds=config["seeds"],
    script:
        "../scripts/factor.py"


ruleorder: factor > eigh


rule feature_pool_spectrum:
    input:
        embeddings="results/{run}/embeddings/{dataset}/{backbone}/{weights}.npy",
        dataset="results/{run}/datasets/{dataset}.npz",
        accuracy=kernel_accuracy,
    output:
        "results/{run}/spectra/{dataset}/{backbone}/{weights}/{kernel}/pool.npz",
    log:
        "logs/{run}/pool_spectrum/{dataset}/{backbone}/{weights}/{kernel}.log",
    benchmark:
        "benchmarks/{run}/pool_spectrum/{dataset}/{backbone}/{weights}/{kernel}.tsv"
    wildcard_constraints:
        kernel="features",
    conda:
        "../../envs/rmtlens.yaml"
    resources:
        mem_mb=lambda wc: spectral_mem_mb(wc, n_pool(wc)),
        runtime=lambda wc, attempt: minutes_for(n_pool(wc), 5, 1, attempt),
    params:
        accuracy=accuracy_params(),
    script:
        "../scripts/feature_pool_spectrum.py"


ruleorder: feature_pool_spectrum > pool_spectrum
