rule kernel:
    input:
        embeddings="results/embeddings/{dataset}/{backbone}/{weights}.npy",
    output:
        "results/kernels/{dataset}/{backbone}/{weights}/features.npy",
    params:
        n_pool=n_pool,
    log:
        "logs/kernel/{dataset}/{backbone}/{weights}/features.log",
    benchmark:
        "benchmarks/kernel/{dataset}/{backbone}/{weights}/features.tsv"
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/rmtlens.yaml"
    script:
        "../scripts/feature_kernel.py"
